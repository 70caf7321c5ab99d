"""Transform vocabulary through HTTP: negotiation and Vary, presets, width policy, animation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import pyvips
from aiohttp.test_utils import TestClient

from proxy.signing import Signer
from tests import images
from tests.test_transform import animated_gif

Put = Callable[[str, bytes], None]
CHROME = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
OLD_SAFARI = "image/webp,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5"
OLD_BROWSER = "image/png,image/*;q=0.8,*/*;q=0.5"


@pytest.fixture
def photo(put: Put) -> str:
    put("p/1.jpg", images.jpeg(images.photo(900, 600)))
    return "p/1.jpg"


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        (CHROME, "image/avif"),
        (OLD_SAFARI, "image/webp"),
        (OLD_BROWSER, "image/jpeg"),
        (None, "image/jpeg"),
        ("image/avif;q=0, image/webp", "image/webp"),
    ],
)
async def test_auto_format_from_accept_with_vary(
    client: TestClient[Any, Any], signer: Signer, photo: str, accept: str | None, content_type: str
) -> None:
    headers = {"Accept": accept} if accept else {}
    resp = await client.get(signer.url(photo, w=300, f="auto"), headers=headers)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == content_type
    assert resp.headers["Vary"] == "Accept"
    assert images.decode(await resp.read()).width == 300


async def test_auto_variants_have_distinct_etags(
    client: TestClient[Any, Any], signer: Signer, photo: str
) -> None:
    url = signer.url(photo, w=300, f="auto")
    tags = set()
    for accept in (CHROME, OLD_SAFARI, OLD_BROWSER):
        resp = await client.get(url, headers={"Accept": accept})
        tags.add(resp.headers["ETag"])
    assert len(tags) == 3
    # A cached AVIF must not be served to a browser without AVIF support.
    again = await client.get(url, headers={"Accept": OLD_BROWSER})
    assert again.headers["Content-Type"] == "image/jpeg"


async def test_explicit_format_never_varies(
    client: TestClient[Any, Any], signer: Signer, photo: str
) -> None:
    resp = await client.get(signer.url(photo, w=300, f="webp"), headers={"Accept": CHROME})
    assert "Vary" not in resp.headers


async def test_presets_only_without_presets_refuses_everything(
    make_client: Any, signer: Signer, photo: str
) -> None:
    client = await make_client(transform__presets_only="true")
    resp = await client.get(signer.url(photo, w=300))
    assert resp.status == 400
    assert "only presets" in await resp.text()
    resp = await client.get(signer.url(photo, p="card"))
    assert resp.status == 400
    assert "unknown preset" in await resp.text()


async def test_presets_through_config_file(
    aiohttp_client: Any, s3_server: str, bucket: Any, signer: Signer, photo: str, tmp_path: Any
) -> None:
    from prometheus_client import CollectorRegistry

    from proxy.app import create_app
    from proxy.settings import load_settings
    from tests.conftest import s3_env

    config = tmp_path / "c.toml"
    config.write_text(
        '[transform]\npresets_only = true\n[presets.card]\nw = 200\nh = 200\nfit = "cover"\n'
        'f = "webp"\n'
    )
    settings = load_settings(config, s3_env(s3_server, bucket[0]))
    client = await aiohttp_client(create_app(settings, registry=CollectorRegistry()))
    resp = await client.get(signer.url(photo, p="card"))
    assert resp.status == 200
    out = images.decode(await resp.read())
    assert (out.width, out.height, resp.headers["Content-Type"]) == (200, 200, "image/webp")
    retina = await client.get(signer.url(photo, p="card", dpr=2))
    assert images.decode(await retina.read()).width == 400
    free = await client.get(signer.url(photo, p="card", w=500))
    assert free.status == 400
    assert (await free.text()).strip() == "only presets are allowed here; 'w' is not"


async def test_width_policy_rounds_up(make_client: Any, signer: Signer, photo: str) -> None:
    client = await make_client(transform__allowed_widths="200,400,800")
    resp = await client.get(signer.url(photo, w=250, f="webp"))
    assert images.decode(await resp.read()).width == 400
    reject = await make_client(
        transform__allowed_widths="200,400,800", transform__width_policy="reject"
    )
    resp = await reject.get(signer.url(photo, w=250, f="webp"))
    assert resp.status == 400


async def test_output_limit_is_400(make_client: Any, signer: Signer, photo: str) -> None:
    client = await make_client(transform__max_width="1000")
    resp = await client.get(signer.url(photo, w=600, dpr=2))
    assert resp.status == 400
    assert "at most 1000" in await resp.text()


async def test_animated_gif_to_animated_webp(
    client: TestClient[Any, Any], signer: Signer, put: Put
) -> None:
    put("a.gif", animated_gif(frames=7))
    resp = await client.get(signer.url("a.gif", w=80, f="webp"))
    assert resp.status == 200
    out = pyvips.Image.new_from_buffer(await resp.read(), "", n=-1)
    assert out.get("n-pages") == 7
    assert out.width == 80


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"plain text, not an image", 422),
        (b"", 422),
        (b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>', 415),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64, 415),
    ],
)
async def test_refused_sources_are_clear_4xx(
    client: TestClient[Any, Any], signer: Signer, put: Put, body: bytes, status: int
) -> None:
    put("bad.jpg", body)
    resp = await client.get(signer.url("bad.jpg", w=100))
    assert resp.status == status
    text = await resp.text()
    assert text.count("\n") == 1
    assert "Traceback" not in text
