"""Opt-in: every real-world file of the shared corpus through the HTTP service.

Enabled by ``ORIGINSHIELD_TESTDATA=/path/to/testdata`` (skipped otherwise). Files that libvips
decodes must render at w=300 in every output format, upright and 8-bit sRGB (or 8-bit grey);
the rest (HEIC, SVG while SVG is off) must get a clear 4xx, never a 5xx.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import pyvips
from prometheus_client import CollectorRegistry

from proxy.app import create_app
from proxy.settings import load_settings

TESTDATA = os.environ.get("ORIGINSHIELD_TESTDATA", "")
ROOT = Path(TESTDATA) if TESTDATA else None
pytestmark = [
    pytest.mark.testdata,
    pytest.mark.skipif(ROOT is None, reason="set ORIGINSHIELD_TESTDATA to run over real files"),
]
REFUSED_SUFFIXES = {".heic", ".svg", ".svgz"}


def _files(*folders: str) -> list[str]:
    if ROOT is None:
        return []
    return sorted(
        str(p.relative_to(ROOT)) for f in folders for p in (ROOT / f).iterdir() if p.is_file()
    )


@pytest.fixture
async def local_client(aiohttp_client: Any) -> Any:
    assert ROOT is not None
    settings = load_settings(
        None,
        {
            "ORIGINSHIELD_ORIGIN__ROOT": str(ROOT),
            "ORIGINSHIELD_SIGNING__KEYS": "testdata-key-0123456789",
            "ORIGINSHIELD_SIGNING__REQUIRED": "false",
            "ORIGINSHIELD_LOG__ACCESS": "false",
        },
    )
    return await aiohttp_client(create_app(settings, registry=CollectorRegistry()))


def _oriented_size(path: Path) -> tuple[int, int]:
    img = pyvips.Image.new_from_file(str(path))
    fields = img.get_fields()
    height = img.get("page-height") if "page-height" in fields else img.height
    orientation = img.get("orientation") if "orientation" in fields else 1
    if orientation in (5, 6, 7, 8):
        return height, img.width
    return img.width, height


@pytest.mark.parametrize("name", _files("photos", "edge"))
@pytest.mark.parametrize("fmt", ["jpeg", "webp", "avif", "png"])
async def test_every_file_renders(local_client: Any, name: str, fmt: str) -> None:
    assert ROOT is not None
    resp = await local_client.get(f"/{name}?w=300&f={fmt}")
    if Path(name).suffix.lower() in REFUSED_SUFFIXES:
        assert resp.status in (415, 422), await resp.text()
        return
    assert resp.status == 200, (name, await resp.text())
    out = pyvips.Image.new_from_buffer(await resp.read(), "")
    src_w, src_h = _oriented_size(ROOT / name)
    width = min(300, src_w)
    assert out.width == width
    assert abs(out.get("page-height") if "page-height" in out.get_fields() else out.height
               - round(src_h * width / src_w)) <= 1  # fmt: skip
    assert out.format == "uchar"
    assert out.interpretation in ("srgb", "b-w")


HARMLESS = {
    "broken-exif.jpg",
    "invalid-quantization.jpg",
    "bomb-gif-frame-extents.gif",
    "bomb-png-ztxt.png",
    "junk-before-soi.jpg",
    "fuzz-crash-tiff-0c7e0e8e.tif",
}
RSS_LIMIT_KB = 1024 * 1024


@pytest.mark.parametrize("formats", ["", "jpeg,png,webp,avif,gif,tiff,svg"])
async def test_bad_corpus_gets_4xx_and_the_server_stays_healthy(
    tmp_path: Path, formats: str
) -> None:
    """Every hostile file: a 4xx within 2 s (six harmless ones may render); RSS stays bounded."""
    import asyncio
    import signal
    import sys
    import time

    import aiohttp

    from tests.servers import clean_env, free_port, wait_http

    assert ROOT is not None
    port = free_port()
    env = clean_env(
        ORIGINSHIELD_ORIGIN__ROOT=str(ROOT),
        ORIGINSHIELD_SIGNING__KEYS="testdata-key-0123456789",
        ORIGINSHIELD_SIGNING__REQUIRED="false",
        ORIGINSHIELD_LOG__ACCESS="false",
    )
    if formats:
        env["ORIGINSHIELD_TRANSFORM__SOURCE_FORMATS"] = formats
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "serve", "--port", str(port), env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_http(base + "/healthz")
        async with aiohttp.ClientSession() as session:
            failures = []
            for name in _files("bad"):
                started = time.monotonic()
                timeout = aiohttp.ClientTimeout(total=2.0)
                async with session.get(f"{base}/{name}?w=300&f=webp", timeout=timeout) as r:
                    body = await r.read()
                    status = r.status
                elapsed = time.monotonic() - started
                file = Path(name).name
                harmless = file in HARMLESS or (formats and file == "svg-too-big-32768x1.svg")
                if status == 200 and harmless:
                    out = pyvips.Image.new_from_buffer(body, "")
                    assert out.width <= 300
                elif not 400 <= status < 500:
                    failures.append((name, status))
                assert elapsed < 2.0, (name, elapsed)
            assert not failures, failures
            async with session.get(base + "/healthz") as r:
                assert r.status == 200
            ok = f"{base}/photos/cardinal-bird-1920x1080.jpg?w=300&f=webp"
            async with session.get(ok) as r:
                assert r.status == 200
        status_text = Path(f"/proc/{proc.pid}/status").read_text()
        peak_kb = int(status_text.split("VmHWM:")[1].split()[0])
        assert peak_kb < RSS_LIMIT_KB, peak_kb
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
