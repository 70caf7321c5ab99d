"""The server process: graceful shutdown on SIGTERM and several workers on one port."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp

from proxy.signing import Signer
from tests import images
from tests.conftest import KEY
from tests.faults import FaultProxy
from tests.servers import clean_env, free_port, wait_http


async def start_server(
    tmp_path: Path, proxy: FaultProxy, bucket_name: str, *args: str, **env: str
) -> tuple[asyncio.subprocess.Process, int]:
    port = free_port()
    config = tmp_path / "c.toml"
    config.write_text(
        f'[origin]\nkind = "s3"\nendpoint_url = "{proxy.url}"\nbucket = "{bucket_name}"\n'
        'region = "us-east-1"\n'
    )
    full_env = clean_env(
        ORIGINSHIELD_SIGNING__KEYS=KEY,
        ORIGINSHIELD_ORIGIN__ACCESS_KEY_ID="testing",
        ORIGINSHIELD_ORIGIN__SECRET_ACCESS_KEY="testing",
        **{f"ORIGINSHIELD_{k.upper()}": v for k, v in env.items()},
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "serve", "--config", str(config), "--port", str(port),
        *args, env=full_env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await wait_http(f"http://127.0.0.1:{port}/healthz")
    except AssertionError:
        proc.kill()
        raise
    return proc, port


async def test_sigterm_drains_and_finishes_in_flight(
    tmp_path: Path, proxy: FaultProxy, bucket: tuple[str, Any], signer: Signer
) -> None:
    name, s3 = bucket
    s3.put_object(Bucket=name, Key="a.jpg", Body=images.jpeg(images.photo(800, 600)))
    proc, port = await start_server(
        tmp_path, proxy, name, server__drain_delay="1", server__shutdown_grace="10",
        log__access="false",
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    proxy.delay = 1.5  # every origin fetch is slow: requests are in flight when SIGTERM lands
    async with aiohttp.ClientSession() as session:

        async def get(path: str) -> tuple[int, int]:
            async with session.get(base + path) as r:
                return r.status, len(await r.read())

        inflight = [asyncio.ensure_future(get(signer.url("a.jpg", w=100 + i))) for i in range(5)]
        await asyncio.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        async with session.get(base + "/readyz") as r:
            assert r.status == 503
            assert (await r.text()).strip() == "not ready: draining"
        results = await asyncio.wait_for(asyncio.gather(*inflight), 30)
    assert all(status == 200 and size > 0 for status, size in results), results
    assert await asyncio.wait_for(proc.wait(), 30) == 0


async def test_workers_share_one_port(
    tmp_path: Path, proxy: FaultProxy, bucket: tuple[str, Any], signer: Signer
) -> None:
    name, s3 = bucket
    s3.put_object(Bucket=name, Key="a.jpg", Body=images.jpeg(images.photo(400, 300)))
    proc, port = await start_server(tmp_path, proxy, name, "--workers", "2", log__access="false")
    children = [
        pid
        for pid in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        if "resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_text()
    ]
    assert len(children) == 2
    url = f"http://127.0.0.1:{port}{signer.url('a.jpg', w=50)}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        for _ in range(20):
            async with session.get(url) as r:
                assert r.status == 200
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    for pid in children:
        assert not Path(f"/proc/{pid}").exists()


async def test_cache_hits_through_the_server_fast_lane(
    tmp_path: Path, proxy: FaultProxy, bucket: tuple[str, Any], signer: Signer
) -> None:
    """A started server answers hits before routing; they must look and count like any other."""
    name, s3 = bucket
    s3.put_object(Bucket=name, Key="a.jpg", Body=images.jpeg(images.photo(300, 200)))
    proc, port = await start_server(tmp_path, proxy, name, log__access="false")
    base = f"http://127.0.0.1:{port}"
    url = base + signer.url("a.jpg", w=120, f="webp")
    try:
        async with aiohttp.ClientSession() as session:
            seen = []
            for _ in range(3):
                async with session.get(url) as r:
                    assert r.status == 200
                    assert r.headers["Server"] == "originshield"
                    assert r.headers["Content-Type"] == "image/webp"
                    seen.append((await r.read(), r.headers["ETag"], r.headers["X-Request-Id"]))
            assert len({body for body, _, _ in seen}) == 1
            assert len({etag for _, etag, _ in seen}) == 1
            assert len({rid for _, _, rid in seen}) == 3
            etag = seen[0][1]
            async with session.get(url, headers={"If-None-Match": etag}) as r:
                assert r.status == 304
                assert r.headers["Server"] == "originshield"
                assert await r.read() == b""
            async with session.head(url) as r:
                assert r.status == 200
                assert await r.read() == b""
            async with session.get(url.replace("w=120", "w=121")) as r:
                assert r.status == 403  # the fast lane never bypasses the signature
            async with session.get(base + "/metrics") as r:
                text = await r.text()

        def value(prefix: str) -> float:
            line = next(x for x in text.splitlines() if x.startswith(prefix))
            return float(line.rsplit(" ", 1)[1])

        assert value('originshield_cache_lookups_total{layer="renders",result="hit"}') == 4
        assert value('originshield_requests_total{route="image",status_class="2xx"}') == 4
        assert value('originshield_requests_total{route="image",status_class="3xx"}') == 1
        assert value('originshield_transforms_total{format="webp"}') == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
