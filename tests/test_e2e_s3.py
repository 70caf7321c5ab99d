"""The whole path against a real S3-protocol server: signed URL -> bucket -> pyvips -> headers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from proxy.signing import Signer
from tests import images
from tests.conftest import OLD_KEY, metric

Put = Callable[[str, bytes], None]
FORMATS = {
    "webp": ("image/webp", "webpload"),
    "avif": ("image/avif", "heifload"),
    "jpeg": ("image/jpeg", "jpegload"),
    "png": ("image/png", "pngload"),
}


@pytest.fixture
def photo(put: Put) -> str:
    put("products/1.jpg", images.jpeg(images.photo(1200, 900)))
    return "products/1.jpg"


@pytest.mark.parametrize("fmt", list(FORMATS))
async def test_signed_resize_each_format(
    client: TestClient[Any, Any], signer: Signer, photo: str, fmt: str
) -> None:
    resp = await client.get(signer.url(photo, w=400, f=fmt))
    assert resp.status == 200, await resp.text()
    body = await resp.read()
    content_type, loader = FORMATS[fmt]
    assert resp.headers["Content-Type"] == content_type
    assert int(resp.headers["Content-Length"]) == len(body)
    out = images.decode(body)
    assert out.get("vips-loader").startswith(loader)
    assert (out.width, out.height) == (400, 300)
    assert resp.headers["ETag"].startswith('"')
    assert "Last-Modified" in resp.headers
    assert "max-age=" in resp.headers["Cache-Control"]
    assert "max-age=" in resp.headers["Cloudflare-CDN-Cache-Control"]
    assert "Vary" not in resp.headers
    assert resp.headers["Cache-Tag"] == photo
    assert "Set-Cookie" not in resp.headers


async def test_default_format_is_the_sources(
    client: TestClient[Any, Any], signer: Signer, put: Put
) -> None:
    put("a.png", images.png(images.photo(300, 200)))
    resp = await client.get(signer.url("a.png", w=150))
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "image/png"


async def test_scale_down_never_enlarges(
    client: TestClient[Any, Any], signer: Signer, photo: str
) -> None:
    resp = await client.get(signer.url(photo, w=3000))
    out = images.decode(await resp.read())
    assert (out.width, out.height) == (1200, 900)


async def test_cover_is_exact(client: TestClient[Any, Any], signer: Signer, photo: str) -> None:
    resp = await client.get(signer.url(photo, w=300, h=300, fit="cover"))
    assert resp.status == 200
    out = images.decode(await resp.read())
    assert (out.width, out.height) == (300, 300)


async def test_exif_orientation_6_comes_out_upright(
    client: TestClient[Any, Any], signer: Signer, put: Put
) -> None:
    put("phone.jpg", images.with_orientation(images.marked(400, 300), 6))
    resp = await client.get(signer.url("phone.jpg", w=200, f="png"))
    out = images.decode(await resp.read())
    assert (out.width, out.height) == (200, 150)
    red = images.mean_rgb(out, 10, 10, 30, 30)
    blue = images.mean_rgb(out, 150, 110, 30, 30)
    assert red[0] > 180 and red[2] < 80, red
    assert blue[2] > 180 and blue[0] < 80, blue
    assert "orientation" not in out.get_fields()


async def test_timed_token_accepted_and_ttl_bounded(
    client: TestClient[Any, Any], signer: Signer, photo: str
) -> None:
    issued = int(time.time()) - 600
    resp = await client.get(signer.timed_url(photo, issued_at=issued, w=200, f="webp"))
    assert resp.status == 200
    # ttl is 3600 by default: 3000 s are left, so no cache may keep it longer.
    browser = resp.headers["Cache-Control"]
    edge = resp.headers["Cloudflare-CDN-Cache-Control"]
    for value in (browser, edge):
        age = int(value.split("max-age=")[1].split(",")[0])
        assert 2990 <= age <= 3000, value
        assert "stale" not in value


async def test_expired_timed_token_refused(
    client: TestClient[Any, Any], signer: Signer, photo: str
) -> None:
    url = signer.timed_url(photo, issued_at=int(time.time()) - 3601, w=200)
    resp = await client.get(url)
    assert resp.status == 403
    assert resp.headers["Cache-Control"] == "no-store"
    assert (await resp.text()).strip() == "token expired"


async def test_rotated_key_still_verifies(client: TestClient[Any, Any], photo: str) -> None:
    resp = await client.get(Signer([OLD_KEY]).url(photo, w=100))
    assert resp.status == 200


async def test_tampered_parameter_refused(
    client: TestClient[Any, Any], signer: Signer, photo: str
) -> None:
    url = signer.url(photo, w=400, f="webp")
    resp = await client.get(url.replace("w=400", "w=401"))
    assert resp.status == 403
    assert resp.headers["Cache-Control"] == "no-store"
    unsigned = await client.get(f"/{photo}?w=400")
    assert unsigned.status == 403
    other_key = await client.get(Signer(["another-key-that-is-long-enough"]).url(photo, w=400))
    assert other_key.status == 403


async def test_missing_object_is_404_briefly_cached(
    client: TestClient[Any, Any], signer: Signer
) -> None:
    resp = await client.get(signer.url("nope/missing.jpg", w=100))
    assert resp.status == 404
    assert resp.headers["Cache-Control"] == "public, max-age=60"
    assert (await resp.text()).strip() == "not found"


async def test_unknown_parameter_is_400(
    client: TestClient[Any, Any], signer: Signer, photo: str
) -> None:
    resp = await client.get(signer.url(photo, w=100, width=5))
    assert resp.status == 400
    assert (await resp.text()).strip() == "unknown parameter 'width'"


async def test_if_none_match_gives_304(
    client: TestClient[Any, Any], signer: Signer, photo: str
) -> None:
    url = signer.url(photo, w=320, f="webp")
    first = await client.get(url)
    etag = first.headers["ETag"]
    again = await client.get(url, headers={"If-None-Match": etag})
    assert again.status == 304
    assert await again.read() == b""
    assert again.headers["ETag"] == etag
    changed = await client.get(url, headers={"If-None-Match": '"something-else"'})
    assert changed.status == 200


async def test_304_without_rendering_on_a_cold_cache(
    make_client: Any, signer: Signer, photo: str
) -> None:
    """Another replica (a fresh app) agrees on the ETag and answers 304 without a transform."""
    url = signer.url(photo, w=330, f="webp")
    first = await (await make_client()).get(url)
    etag = first.headers["ETag"]
    fresh = await make_client()
    resp = await fresh.get(url, headers={"If-None-Match": etag})
    assert resp.status == 304
    assert await metric(fresh, "originshield_transforms_total") == 0
    assert await metric(fresh, "originshield_cache_lookups_total", layer="renders") == 1


async def test_head_has_headers_only(
    client: TestClient[Any, Any], signer: Signer, photo: str
) -> None:
    resp = await client.head(signer.url(photo, w=100, f="jpeg"))
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "image/jpeg"
    assert int(resp.headers["Content-Length"]) > 0
    assert await resp.read() == b""


async def test_versioned_url_is_immutable(
    client: TestClient[Any, Any], signer: Signer, photo: str
) -> None:
    resp = await client.get(signer.url(photo, w=100, v="3"))
    assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"


async def test_healthz(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200
