"""A stand-in edge: nginx ``proxy_cache`` in front of originshield, honouring its headers the way a
CDN does. Shows a HIT on the second request, Vary: Accept respected for f=auto, a 404 cached
briefly, a 403 never cached, and a timed-token response not kept past its token."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxy.signing import Signer
from tests import images
from tests.conftest import KEY
from tests.servers import free_port, wait_http

NGINX_CONF = """
{user}
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    proxy_cache_path {tmp}/cache keys_zone=images:10m;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{origin};
            proxy_cache images;
            proxy_cache_key $scheme$host$request_uri;
            add_header X-Cache-Status $upstream_cache_status always;
        }}
    }}
}}
"""


@pytest.fixture
async def edge(make: Any, tmp_path: Path) -> AsyncIterator[tuple[str, Any]]:
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if nginx is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is not installed")
        pytest.skip("nginx is not installed (apt-get install nginx)")
    client = await make(signing__ttl="8")
    port = free_port()
    conf = tmp_path / "nginx.conf"
    # As root, nginx would hand its workers to "nobody", who cannot enter pytest's private tmp.
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(NGINX_CONF.format(user=user, tmp=tmp_path, port=port, origin=client.port))
    proc = await asyncio.create_subprocess_exec(
        nginx, "-c", str(conf), "-g", "daemon off;", stderr=asyncio.subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    await wait_http(base + "/healthz")
    yield base, client
    proc.send_signal(signal.SIGQUIT)
    await asyncio.wait_for(proc.wait(), 10)


async def get(base: str, path: str, **headers: str) -> tuple[int, str | None, dict[str, str]]:
    async with aiohttp.ClientSession() as session, session.get(base + path, headers=headers) as r:
        await r.read()
        return r.status, r.headers.get("X-Cache-Status"), dict(r.headers)


async def test_edge_hits_after_a_miss(edge: tuple[str, Any], put: Any, signer: Signer) -> None:
    base, _ = edge
    put("p/1.jpg", images.jpeg(images.photo(400, 300)))
    url = signer.url("p/1.jpg", w=100, f="webp")
    assert (await get(base, url))[:2] == (200, "MISS")
    status, cache, headers = await get(base, url)
    assert (status, cache) == (200, "HIT")
    assert headers["Content-Type"] == "image/webp"


async def test_edge_respects_vary_accept(edge: tuple[str, Any], put: Any, signer: Signer) -> None:
    base, _ = edge
    put("p/1.jpg", images.jpeg(images.photo(400, 300)))
    url = signer.url("p/1.jpg", w=100, f="auto")
    avif = "image/avif,image/webp,*/*"
    old = "image/png,*/*;q=0.5"
    assert (await get(base, url, Accept=avif))[2]["Content-Type"] == "image/avif"
    status, _, headers = await get(base, url, Accept=old)
    assert (status, headers["Content-Type"]) == (200, "image/jpeg")  # not the cached AVIF
    assert headers["Vary"] == "Accept"
    _, cache, headers = await get(base, url, Accept=avif)
    assert (cache, headers["Content-Type"]) == ("HIT", "image/avif")


async def test_edge_keeps_404_briefly_and_never_403(edge: tuple[str, Any], signer: Signer) -> None:
    base, _ = edge
    missing = signer.url("p/missing.jpg", w=100)
    assert (await get(base, missing))[:2] == (404, "MISS")
    assert (await get(base, missing))[:2] == (404, "HIT")
    forged = "/p/1.jpg?w=100&s=forged"
    assert (await get(base, forged))[:2] == (403, "MISS")
    assert (await get(base, forged))[:2] == (403, "MISS")


async def test_edge_never_keeps_a_timed_response_past_its_token(
    edge: tuple[str, Any], put: Any
) -> None:
    base, _ = edge
    put("p/1.jpg", images.jpeg(images.photo(400, 300)))
    # The origin runs with signing.ttl = 8 s; this token was issued 5 s ago: 3 s left.
    url = Signer([KEY]).timed_url("p/1.jpg", issued_at=int(time.time()) - 5, w=90)
    status, cache, headers = await get(base, url)
    assert (status, cache) == (200, "MISS")
    assert int(headers["Cache-Control"].split("max-age=")[1]) <= 3
    assert (await get(base, url))[:2] == (200, "HIT")
    await asyncio.sleep(4)
    status, cache, _ = await get(base, url)
    assert status == 403  # the edge let its copy expire with the token and asked again
    assert cache in ("EXPIRED", "MISS")
