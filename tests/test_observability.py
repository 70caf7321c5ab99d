"""Observability: metric exposition, rules, a real Prometheus scraping a real server, cardinality,
the metrics port, and aggregation over worker processes."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestClient

from proxy.signing import Signer
from tests import images
from tests.conftest import metric
from tests.faults import FaultProxy
from tests.servers import ROOT, free_port, wait_http
from tests.test_lifecycle import start_server

Put = Any
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"


def tool(name: str) -> str:
    """Debian's prometheus package; .ci/run installs it, so in CI it must be there."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed")
        pytest.skip(f"{name} is not installed (apt-get install prometheus)")
    return path


async def traffic(client: TestClient[Any, Any], signer: Signer, put: Put) -> None:
    put("a.jpg", images.jpeg(images.photo(300, 200)))
    for w in (100, 120, 100, 100, 120):
        assert (await client.get(signer.url("a.jpg", w=w))).status == 200
    assert (await client.get(signer.url("missing.jpg", w=10))).status == 404
    assert (await client.get("/a.jpg?w=1")).status == 403


def series(text: str) -> set[str]:
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if line and line[0] != "#"}


async def test_exposition_passes_promtool(make: Any, signer: Signer, put: Put) -> None:
    promtool = tool("promtool")
    client = await make()
    await traffic(client, signer, put)
    text = await (await client.get("/metrics")).text()
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.strip() == "" and check.stderr.strip() == "", "promtool warnings"
    names = {s.split("{")[0] for s in series(text)}
    for expected in (
        "originshield_requests_total",
        "originshield_request_duration_seconds_bucket",
        "originshield_stage_duration_seconds_bucket",
        "originshield_cache_lookups_total",
        "originshield_cache_bytes",
        "originshield_cache_entries",
        "originshield_coalesced_requests_total",
        "originshield_origin_requests_total",
        "originshield_origin_read_bytes_total",
        "originshield_served_bytes_total",
        "originshield_transforms_total",
        "originshield_transforms_in_flight",
        "originshield_transform_queue_depth",
        "originshield_rejections_total",
        "originshield_libvips_memory_bytes",
        "originshield_build_info",
    ):
        assert expected in names, expected
    assert await metric(client, "originshield_rejections_total", reason="signature") == 1
    assert await metric(client, "originshield_transforms_total", format="jpeg") == 2
    assert (
        await metric(client, "originshield_cache_lookups_total", layer="renders", result="hit") == 3
    )


def test_rules_pass_promtool() -> None:
    promtool = tool("promtool")
    rules = sorted(str(p) for p in (PROMETHEUS_DIR / "rules").glob("*.yml"))
    check = subprocess.run([promtool, "check", "rules", *rules], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    tests = subprocess.run(
        [promtool, "test", "rules", "originshield_test.yml"],
        cwd=PROMETHEUS_DIR / "tests", capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "SUCCESS" in tests.stdout


def test_every_alert_has_a_runbook() -> None:
    doc = yaml.safe_load((PROMETHEUS_DIR / "rules" / "originshield.alerts.yml").read_text())
    alerts = [r for g in doc["groups"] for r in g["rules"] if "alert" in r]
    assert len(alerts) >= 6
    for rule in alerts:
        assert len(rule["annotations"]["runbook"]) > 80, rule["alert"]
        assert rule["labels"]["severity"] in ("page", "warn")


@pytest.fixture
async def prometheus(tmp_path: Path) -> AsyncIterator[Any]:
    binary = tool("prometheus")
    started: list[asyncio.subprocess.Process] = []

    async def start(target_port: int) -> str:
        rules = yaml.safe_load((PROMETHEUS_DIR / "rules" / "originshield.rules.yml").read_text())
        for group in rules["groups"]:
            group["interval"] = "1s"
        (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(tmp_path / "rules.yml")],
            "scrape_configs": [{
                "job_name": "originshield",
                "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}],
            }],
        }  # fmt: skip
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        proc = await asyncio.create_subprocess_exec(
            binary, f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        started.append(proc)
        base = f"http://127.0.0.1:{port}"
        await wait_http(f"{base}/-/ready")
        return base

    yield start
    for proc in started:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)


async def query(base: str, expr: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base}/api/v1/query", params={"query": expr}) as r,
    ):
        result: dict[str, Any] = await r.json()
        return result


async def test_real_prometheus_scrapes_and_computes_the_hit_ratio(
    make: Any, signer: Signer, put: Put, prometheus: Any
) -> None:
    client = await make()
    base = await prometheus(client.server.port)
    put("a.jpg", images.jpeg(images.photo(300, 200)))
    value = None
    for round_ in range(60):
        # Traffic keeps flowing while Prometheus scrapes, so rates have two points to work with.
        for w in (100, 100, 100, 140 + round_):
            await client.get(signer.url("a.jpg", w=w))
        answer = await query(base, "originshield:render_cache_hit_ratio:rate5m")
        assert answer["status"] == "success"
        if answer["data"]["result"]:
            value = float(answer["data"]["result"][0]["value"][1])
            break
        await asyncio.sleep(0.5)
    assert value is not None, "no hit ratio from Prometheus"
    assert 0.3 < value < 1.0
    up = await query(base, 'up{job="originshield"}')
    assert up["data"]["result"][0]["value"][1] == "1"
    # Every expression of the dashboard is valid PromQL against the real series.
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "originshield.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$job", ".*")
            answer = await query(base, expr)
            assert answer["status"] == "success", (panel["title"], answer)


async def test_label_cardinality_stays_constant(make: Any, signer: Signer, put: Put) -> None:
    client = await make()
    put("a.jpg", images.jpeg(images.photo(120, 80)))
    for i in range(50):  # every kind of outcome once
        await client.get(signer.url(f"warm/{i}.jpg", w=10))
        await client.get(signer.url("a.jpg", w=10 + i % 3))
        await client.get(f"/unsigned/{i}.jpg")
        await client.get(signer.url("a.jpg", w=99999))
    await client.get("/metrics")  # a scrape counts itself from the next one on
    before = series(await (await client.get("/metrics")).text())
    for i in range(2000):
        await client.get(signer.url(f"k/{i}/{'x' * (i % 40)}.jpg", w=10 + i % 7))
    after = series(await (await client.get("/metrics")).text())
    assert after == before
    assert not any("k/" in s for s in after)


async def test_metrics_port_and_allowed_networks(
    tmp_path: Path, proxy: FaultProxy, bucket: tuple[str, Any]
) -> None:
    metrics_port = free_port()
    proc, port = await start_server(
        tmp_path, proxy, bucket[0], metrics__port=str(metrics_port), log__access="false"
    )
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{metrics_port}/metrics") as r:
                assert r.status == 200
                assert "originshield_build_info" in await r.text()
            async with session.get(f"http://127.0.0.1:{port}/metrics") as r:
                assert r.status == 403  # just an (unsigned) image path on the main port
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.wait()
    metrics_port = free_port()
    proc, port = await start_server(
        tmp_path, proxy, bucket[0], metrics__port=str(metrics_port),
        metrics__allowed_networks="10.0.0.0/8", log__access="false",
    )  # fmt: skip
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{metrics_port}/metrics") as r,
        ):
            assert r.status == 403
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.wait()


async def test_workers_report_aggregated_metrics(
    tmp_path: Path, proxy: FaultProxy, bucket: tuple[str, Any], signer: Signer
) -> None:
    name, s3 = bucket
    s3.put_object(Bucket=name, Key="a.jpg", Body=images.jpeg(images.photo(200, 100)))
    proc, port = await start_server(tmp_path, proxy, name, "--workers", "2", log__access="false")
    base = f"http://127.0.0.1:{port}"
    try:
        await asyncio.sleep(3)  # both workers up
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            for i in range(20):
                async with session.get(base + signer.url("a.jpg", w=20 + i)) as r:
                    assert r.status == 200
            # Each process folds its request tally into the shared files every 2 s, so after
            # that, whichever process answers, the totals are the same.
            await asyncio.sleep(2.5)
            for _ in range(4):
                async with session.get(base + "/metrics") as r:
                    text = await r.text()
                line = next(
                    x for x in text.splitlines()
                    if x.startswith('originshield_requests_total{route="image",status_class="2xx"}')
                )  # fmt: skip
                assert float(line.rsplit(" ", 1)[1]) == 20
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
