"""The FastAPI example shop: its page links signed <picture> sources that originshield serves."""

from __future__ import annotations

import asyncio
import html
import re
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from examples.fastapi_shop.app import WIDTHS, create_app
from proxy import probe
from proxy.app import create_app as create_origin
from proxy.samples import generate
from proxy.settings import load_settings
from proxy.signing import Signer, Verifier
from tests.conftest import KEY


def test_shop_page_links_signed_pictures() -> None:
    shop = TestClient(create_app([KEY], "https://img.test"))
    page = shop.get("/")
    assert page.status_code == 200
    assert page.text.count("<picture>") == 3
    srcsets = [html.unescape(s) for s in re.findall(r'srcset="([^"]+)"', page.text)]
    assert len(srcsets) == 9  # avif + webp + fallback per product
    verifier = Verifier([KEY], ttl=60)
    for srcset in srcsets:
        candidates = [c.strip().rsplit(" ", 1) for c in srcset.split(",")]
        assert [int(w[:-1]) for _, w in candidates] == WIDTHS
        for url, _ in candidates:
            assert url.startswith("https://img.test/products/")
            verifier.verify(url.removeprefix("https://img.test"))
    assert 'type="image/avif"' in page.text and 'type="image/webp"' in page.text


async def test_shop_urls_are_served_and_probe_passes(aiohttp_client: Any, tmp_path: Path) -> None:
    generate(tmp_path)
    settings = load_settings(
        None, {"ORIGINSHIELD_ORIGIN__ROOT": str(tmp_path), "ORIGINSHIELD_SIGNING__KEYS": KEY,
               "ORIGINSHIELD_LOG__ACCESS": "false"},
    )  # fmt: skip
    origin = await aiohttp_client(create_origin(settings, registry=CollectorRegistry()))
    base = f"http://127.0.0.1:{origin.port}"
    signer = Signer([KEY], base_url=base)
    url = signer.url("products/1.jpg", w=400, f="webp")
    text, code = await asyncio.to_thread(probe.run, [url], ttl=3600, as_json=False)
    assert code == 0, text
    lines = {line.split()[1]: line.split()[0] for line in text.splitlines()}
    assert lines["status"] == "OK"
    assert lines["etag"] == "OK"
    assert lines["cache-control"] == "OK"
    assert lines["edge"] == "WARN"  # not behind Cloudflare here
    timed = signer.timed_url("products/1.jpg", w=300, f="auto")
    text, code = await asyncio.to_thread(probe.run, [timed], ttl=3600, as_json=True)
    assert code == 0, text
    assert '"check": "token"' in text and '"check": "vary"' in text
    bad, code = await asyncio.to_thread(probe.run, [f"{base}/products/1.jpg?w=1"], ttl=3600,
                                        as_json=False)  # fmt: skip
    assert code == 1
    assert bad.startswith("FAIL status")
