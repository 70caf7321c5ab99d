"""Shared fixtures: a real S3-protocol server (moto, server mode), apps wired to it."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from aiohttp.test_utils import TestClient
from moto.server import ThreadedMotoServer
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from proxy.app import create_app
from proxy.settings import Settings, load_settings
from proxy.signing import Signer
from tests.faults import FaultProxy
from tests.servers import EXE, clean_env

KEY = "test-signing-key-0123456789abcdef"
OLD_KEY = "old-signing-key-0123456789abcdef"


@pytest.fixture(autouse=True)
def _no_ambient_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing from the developer's shell may leak into what the tests exercise."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "ORIGINSHIELD_")) and name != "ORIGINSHIELD_TESTDATA":
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_server: str) -> Iterator[tuple[str, Any]]:
    """A fresh bucket per test, and a plain boto3 client to fill it."""
    client = boto3.client(
        "s3",
        endpoint_url=s3_server,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    name = f"test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    yield name, client
    listed = client.list_objects_v2(Bucket=name).get("Contents", [])
    for obj in listed:
        client.delete_object(Bucket=name, Key=obj["Key"])
    client.delete_bucket(Bucket=name)


def s3_env(endpoint: str, bucket_name: str, **extra: str) -> dict[str, str]:
    env = {
        "ORIGINSHIELD_ORIGIN__KIND": "s3",
        "ORIGINSHIELD_ORIGIN__ENDPOINT_URL": endpoint,
        "ORIGINSHIELD_ORIGIN__BUCKET": bucket_name,
        "ORIGINSHIELD_ORIGIN__ACCESS_KEY_ID": "testing",
        "ORIGINSHIELD_ORIGIN__SECRET_ACCESS_KEY": "testing",
        "ORIGINSHIELD_ORIGIN__CONNECT_TIMEOUT": "1",
        "ORIGINSHIELD_ORIGIN__READ_TIMEOUT": "2",
        "ORIGINSHIELD_ORIGIN__RETRIES": "0",
        "ORIGINSHIELD_SIGNING__KEYS": f"{KEY},{OLD_KEY}",
        "ORIGINSHIELD_LOG__ACCESS": "false",
    }
    env.update({f"ORIGINSHIELD_{k.upper()}": v for k, v in extra.items()})
    return env


@pytest.fixture
def signer() -> Signer:
    return Signer([KEY])


ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def make_client(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    bucket: tuple[str, Any],
    s3_server: str,
) -> ClientFactory:
    """An originshield app on the test bucket; keyword arguments are env overrides
    (``transform__queue="1"`` sets ORIGINSHIELD_TRANSFORM__QUEUE)."""

    async def factory(**extra: str) -> TestClient[Any, Any]:
        settings: Settings = load_settings(None, s3_env(s3_server, bucket[0], **extra))
        return await aiohttp_client(create_app(settings, registry=CollectorRegistry()))

    return factory


@pytest.fixture
def put(bucket: tuple[str, Any]) -> Callable[[str, bytes], None]:
    name, client = bucket

    def upload(key: str, body: bytes, content_type: str = "application/octet-stream") -> None:
        client.put_object(Bucket=name, Key=key, Body=body, ContentType=content_type)

    return upload


@pytest.fixture
async def client(make_client: ClientFactory) -> TestClient[Any, Any]:
    return await make_client()


@pytest.fixture
async def proxy(s3_server: str) -> AsyncIterator[FaultProxy]:
    """A counting, fault-injecting proxy in front of the S3-protocol server."""
    fp = FaultProxy(s3_server)
    await fp.start()
    yield fp
    await fp.close()


@pytest.fixture
def make(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    bucket: tuple[str, Any],
    proxy: FaultProxy,
) -> ClientFactory:
    """Like ``make_client``, with the bucket reached through ``proxy``."""

    async def factory(**extra: str) -> TestClient[Any, Any]:
        settings = load_settings(None, s3_env(proxy.url, bucket[0], **extra))
        return await aiohttp_client(create_app(settings, registry=CollectorRegistry()))

    return factory


async def metric(client: TestClient[Any, Any], name: str, **labels: str) -> float:
    """Sum of the samples of one metric (matching the given labels) from /metrics."""
    text = await (await client.get("/metrics")).text()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


@pytest.fixture
def serve() -> Iterator[Any]:
    """Start ``originshield serve`` with a clean environment; stopped (SIGTERM) after the test."""
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str, env: dict[str, str] | None = None, cwd: Path) -> Any:
        proc = subprocess.Popen(
            [*EXE, "serve", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**clean_env(), **(env or {})},
            cwd=cwd,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
