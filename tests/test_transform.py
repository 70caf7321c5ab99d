"""Transforms through ``transform.render``: geometry, orientation, colour, alpha, animation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pyvips

from proxy import transform
from proxy.errors import LimitExceeded, SourceTooLarge, UndecodableImage, UnsupportedFormat
from proxy.options import Limits, TransformOptions, parse, split_query
from tests import icc, images

CFG = transform.TransformConfig()


def render(data: bytes, query: str, variant: str = "", cfg: transform.TransformConfig = CFG) -> Any:
    opts = parse(split_query(query), Limits())
    return transform.render(data, opts, variant, cfg)


def decoded(result: transform.Rendered) -> Any:
    return images.decode(result.body).copy_memory()


# -- geometry ---------------------------------------------------------------------------------

LANDSCAPE = images.jpeg(images.photo(1200, 800))
PORTRAIT = images.jpeg(images.photo(800, 1200))
SMALL = images.jpeg(images.photo(200, 100))

# (source, fit) -> expected size for w=400&h=400
FIT_TABLE = [
    (LANDSCAPE, "scale-down", (400, 267)),
    (PORTRAIT, "scale-down", (267, 400)),
    (SMALL, "scale-down", (200, 100)),
    (LANDSCAPE, "contain", (400, 267)),
    (PORTRAIT, "contain", (267, 400)),
    (SMALL, "contain", (400, 200)),
    (LANDSCAPE, "cover", (400, 400)),
    (PORTRAIT, "cover", (400, 400)),
    (SMALL, "cover", (400, 400)),
    (LANDSCAPE, "crop", (400, 400)),
    (PORTRAIT, "crop", (400, 400)),
    (SMALL, "crop", (200, 100)),
    (LANDSCAPE, "pad", (400, 400)),
    (PORTRAIT, "pad", (400, 400)),
    (SMALL, "pad", (400, 400)),
    (LANDSCAPE, "fill", (400, 400)),
    (PORTRAIT, "fill", (400, 400)),
    (SMALL, "fill", (400, 400)),
]


@pytest.mark.parametrize(("source", "fit", "size"), FIT_TABLE)
def test_fit_modes(source: bytes, fit: str, size: tuple[int, int]) -> None:
    out = render(source, f"w=400&h=400&fit={fit}")
    assert (out.width, out.height) == size
    img = decoded(out)
    assert (img.width, img.height) == size


@pytest.mark.parametrize(
    ("query", "size"),
    [
        ("w=300", (300, 200)),
        ("h=200", (300, 200)),
        ("w=300&fit=cover", (300, 200)),
        ("w=2400&fit=contain", (2400, 1600)),
        ("w=2400", (1200, 800)),
        ("w=300&dpr=2", (600, 400)),
        ("", (1200, 800)),
    ],
)
def test_one_side_keeps_aspect(query: str, size: tuple[int, int]) -> None:
    out = render(LANDSCAPE, query)
    assert (out.width, out.height) == size


def test_pad_uses_background() -> None:
    out = decoded(render(SMALL, "w=400&h=400&fit=pad&bg=00ff00&f=png"))
    top = images.mean_rgb(out, 0, 0, 400, 100)
    assert top == pytest.approx((0, 255, 0), abs=1)


def _halves() -> bytes:
    """Left half red, right half blue, 800x400."""
    left = images.solid(400, 400, images.RED)
    right = images.solid(400, 400, images.BLUE)
    return images.png(left.join(right, "horizontal"))


@pytest.mark.parametrize(
    ("gravity", "expect_red"),
    [("west", True), ("east", False), ("0.1x0.5", True), ("0.9x0.5", False)],
)
def test_gravity_picks_the_side(gravity: str, expect_red: bool) -> None:
    out = decoded(render(_halves(), f"w=100&h=100&fit=cover&g={gravity}&f=png"))
    r, _, b = images.mean_rgb(out, 0, 0, 100, 100)
    assert (r > b) is expect_red


def test_gravity_center_takes_both_halves() -> None:
    out = decoded(render(_halves(), "w=100&h=100&fit=cover&f=png"))
    assert images.mean_rgb(out, 0, 0, 10, 100)[0] > 150
    assert images.mean_rgb(out, 90, 0, 10, 100)[2] > 150


def test_gravity_auto_finds_the_detail() -> None:
    # A flat field with one busy square near the right edge: attention should keep it.
    flat = images.solid(900, 300, (128, 128, 128))
    busy = images.photo(200, 200)
    source = images.png(flat.insert(busy, 680, 50))
    out = decoded(render(source, "w=300&h=300&fit=cover&g=auto&f=png"))
    assert (out.width, out.height) == (300, 300)
    detail = out.crop(150, 0, 150, 300).deviate()
    assert detail > 20


# -- orientation ----------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_comes_out_upright(orientation: int) -> None:
    source = images.with_orientation(images.marked(400, 300), orientation)
    assert pyvips.Image.new_from_buffer(source, "").get("orientation") == orientation
    out = decoded(render(source, "w=200&f=png"))
    assert (out.width, out.height) == (200, 150)
    red = images.mean_rgb(out, 10, 10, 60, 50)
    blue = images.mean_rgb(out, 130, 90, 60, 50)
    assert red[0] > 180 and red[2] < 80, red
    assert blue[2] > 180 and blue[0] < 80, blue
    assert "orientation" not in out.get_fields()
    assert "exif-data" not in out.get_fields()


def test_large_rotated_jpeg_in_every_format() -> None:
    """A phone-sized sideways JPEG: the decode is sequential, the turn needs the whole image."""
    source = images.with_orientation(images.marked(1600, 1200), 6)
    for fmt in ("avif", "webp", "jpeg", "png"):
        out = decoded(render(source, f"w=600&f={fmt}"))
        assert (out.width, out.height) == (600, 450)
        assert images.mean_rgb(out, 20, 20, 100, 100)[0] > 150


# -- colour ---------------------------------------------------------------------------------

PATCHES = [(40, 200, 60), (200, 60, 40), (60, 90, 200), (128, 128, 128), (230, 200, 150)]


def _patch_image() -> Any:
    tiles = [images.solid(64, 64, rgb) for rgb in PATCHES]
    return pyvips.Image.arrayjoin(tiles, across=len(tiles)).copy(interpretation="srgb")


def _delta_e(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    def lab(rgb: tuple[float, ...]) -> list[float]:
        px = pyvips.Image.black(1, 1, bands=3).new_from_image([round(v) for v in rgb])
        return list(px.cast("uchar").copy(interpretation="srgb").colourspace("lab")(0, 0))

    la, lb = lab(a), lab(b)
    return float(sum((x - y) ** 2 for x, y in zip(la, lb, strict=True)) ** 0.5)


def _patch_means(img: Any, size: int) -> list[tuple[float, ...]]:
    return [images.mean_rgb(img, i * size + size // 4, size // 4, size // 2, size // 2)
            for i in range(len(PATCHES))]  # fmt: skip


def _compare(source: bytes, reference: Any, naive: Any) -> None:
    out = decoded(render(source, f"w={32 * len(PATCHES)}&f=png"))
    assert out.interpretation == "srgb"
    assert out.format == "uchar"
    got = _patch_means(out, 32)
    want = _patch_means(reference, 64)
    off = _patch_means(naive, 64)
    for g, w in zip(got, want, strict=True):
        assert _delta_e(g, w) < 3.0, (g, w)
    # The conversion matters: ignoring the profile would be visibly wrong.
    assert max(_delta_e(w, o) for w, o in zip(want, off, strict=True)) > 5.0


def test_adobe_rgb_source_converted_to_srgb(tmp_path: Path) -> None:
    profile = icc.adobe_rgb()
    path = tmp_path / "adobe.icc"
    path.write_bytes(profile)
    img = _patch_image().copy()
    img.set_type(pyvips.GValue.blob_type, "icc-profile-data", profile)
    source = bytes(img.jpegsave_buffer(Q=98, keep="icc", subsample_mode="off"))
    decoded_source = images.decode(source).copy_memory()
    reference = decoded_source.icc_transform("srgb", input_profile=str(path), intent="relative")
    _compare(source, reference, decoded_source)


@pytest.mark.parametrize("embed", [True, False])
def test_cmyk_source_converted_to_srgb(embed: bool) -> None:
    cmyk = _patch_image().icc_export(output_profile="cmyk")
    source = bytes(cmyk.jpegsave_buffer(Q=98, keep="icc" if embed else "none"))
    header = pyvips.Image.new_from_buffer(source, "")
    assert header.interpretation == "cmyk"
    assert ("icc-profile-data" in header.get_fields()) is embed
    reference = images.decode(source).copy_memory().icc_transform("srgb", input_profile="cmyk")
    naive = images.decode(source).copy_memory()[0:3].copy(interpretation="srgb")
    _compare(source, reference, naive)


def test_p3_source_converted_to_srgb() -> None:
    p3 = _patch_image().icc_export(output_profile="p3")
    source = bytes(p3.pngsave_buffer(keep="icc"))
    reference = images.decode(source).copy_memory().icc_transform("srgb", embedded=True)
    _compare(source, reference, images.decode(source).copy_memory())


def test_16bit_png_becomes_8bit_srgb() -> None:
    wide = (_patch_image().cast("ushort") * 257).copy(interpretation="rgb16")
    source = bytes(wide.pngsave_buffer(bitdepth=16))
    assert pyvips.Image.new_from_buffer(source, "").format == "ushort"
    out = decoded(render(source, "w=100&f=png"))
    assert (out.format, out.interpretation) == ("uchar", "srgb")
    patch = images.mean_rgb(out, 2, 5, 10, 10)
    assert patch == pytest.approx(PATCHES[0], abs=3)


def test_greyscale_stays_8bit() -> None:
    grey = images.photo(300, 200)[0].copy(interpretation="b-w")
    for fmt in ("jpeg", "webp", "png", "avif"):
        out = decoded(render(images.jpeg(grey), f"w=150&f={fmt}"))
        assert out.format == "uchar"
        assert out.interpretation in ("b-w", "srgb")


# -- alpha ----------------------------------------------------------------------------------


def _alpha_source() -> bytes:
    rgb = images.solid(200, 200, images.RED)
    alpha = (
        pyvips.Image.black(200, 200)
        .new_from_image(0)
        .cast("uchar")
        .insert(images.solid(100, 200, (255, 255, 255))[0], 100, 0)
    )  # left half transparent
    return images.png(rgb.bandjoin(alpha).copy(interpretation="srgb"))


@pytest.mark.parametrize("fmt", ["webp", "png", "avif"])
def test_alpha_kept(fmt: str) -> None:
    out = decoded(render(_alpha_source(), f"w=100&f={fmt}"))
    assert out.hasalpha()
    assert out[3].crop(0, 0, 40, 100).avg() < 10
    assert out[3].crop(60, 0, 40, 100).avg() > 245


def test_alpha_flattened_for_jpeg_on_bg() -> None:
    white = decoded(render(_alpha_source(), "w=100&f=jpeg"))
    assert white.bands == 3
    assert images.mean_rgb(white, 5, 5, 30, 90) == pytest.approx((255, 255, 255), abs=4)
    black = decoded(render(_alpha_source(), "w=100&f=jpeg&bg=000"))
    assert images.mean_rgb(black, 5, 5, 30, 90) == pytest.approx((0, 0, 0), abs=4)


# -- animation ------------------------------------------------------------------------------


def animated_gif(frames: int = 5, width: int = 160, height: int = 120) -> bytes:
    tiles = [
        images.solid(width, height, (40 * i % 256, 200 - 30 * i % 200, 90)) for i in range(frames)
    ]
    strip = pyvips.Image.arrayjoin(tiles, across=1).copy()
    strip.set_type(pyvips.GValue.gint_type, "page-height", height)
    strip.set_type(pyvips.GValue.array_int_type, "delay", [100] * frames)
    return bytes(strip.gifsave_buffer())


def _pages(body: bytes) -> tuple[int, int, int]:
    img = pyvips.Image.new_from_buffer(body, "", n=-1)
    pages = img.get("n-pages") if "n-pages" in img.get_fields() else 1
    return pages, img.width, img.get("page-height") if pages > 1 else img.height


@pytest.mark.parametrize("fmt", ["webp", "gif"])
def test_animated_gif_stays_animated(fmt: str) -> None:
    out = render(animated_gif(), f"w=80&f={fmt}")
    assert out.format == fmt
    assert _pages(out.body) == (5, 80, 60)


def test_animated_cover_crops_every_frame() -> None:
    out = render(animated_gif(), "w=50&h=50&fit=cover&f=webp")
    assert _pages(out.body) == (5, 50, 50)


def test_anim_false_gives_first_frame() -> None:
    out = render(animated_gif(), "w=80&f=webp&anim=false")
    assert _pages(out.body) == (1, 80, 60)


def test_animated_avif_is_first_frame() -> None:
    out = render(animated_gif(), "w=80&f=avif")
    assert out.format == "avif"
    assert out.frames == 1


def test_frame_cap() -> None:
    cfg = transform.TransformConfig(max_frames=3)
    with pytest.raises(SourceTooLarge, match="frames"):
        render(animated_gif(), "w=80&f=webp", cfg=cfg)
    # The first frame alone is still allowed.
    assert render(animated_gif(), "w=80&f=webp&anim=false", cfg=cfg).frames == 1


# -- effects and formats --------------------------------------------------------------------


def _detail(img: Any) -> float:
    """Mean high-frequency energy: what blur removes and sharpen adds."""
    as_float = img.cast("float")
    return float((as_float - as_float.gaussblur(1.5)).abs().avg())


def test_blur_and_sharpen_change_detail() -> None:
    source = images.jpeg(images.photo(400, 300))
    plain = _detail(decoded(render(source, "w=200&f=png")))
    blurred = _detail(decoded(render(source, "w=200&f=png&blur=5")))
    sharpened = _detail(decoded(render(source, "w=200&f=png&sharpen=5")))
    assert blurred < plain * 0.5
    assert sharpened > plain * 1.05


@pytest.mark.parametrize(
    ("variant", "alpha", "expected"),
    [("avif", False, "avif"), ("webp", False, "webp"), ("other", False, "jpeg"),
     ("other", True, "png"), ("avif", True, "avif")],
)  # fmt: skip
def test_auto_format(variant: str, alpha: bool, expected: str) -> None:
    source = _alpha_source() if alpha else LANDSCAPE
    assert render(source, "w=50&f=auto", variant).format == expected


def test_auto_format_animated() -> None:
    assert render(animated_gif(), "w=50&f=auto", "avif").format == "webp"
    assert render(animated_gif(), "w=50&f=auto", "other").format == "gif"


def test_jpeg_is_progressive() -> None:
    out = render(LANDSCAPE, "w=300&f=jpeg")
    assert images.decode(out.body).get("interlaced") == 1


def test_quality_changes_size() -> None:
    low = render(LANDSCAPE, "w=400&f=webp&q=20").body
    high = render(LANDSCAPE, "w=400&f=webp&q=95").body
    assert len(low) < len(high)


# -- refusals -------------------------------------------------------------------------------


def test_format_decided_by_magic_bytes() -> None:
    with pytest.raises(UndecodableImage):
        render(b"this is text, not a jpeg", "w=10")
    with pytest.raises(UndecodableImage):
        render(b"", "w=10")
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'
    with pytest.raises(UnsupportedFormat):
        render(svg, "w=10")
    tiff = bytes(images.photo(50, 50).tiffsave_buffer())
    assert render(tiff, "w=10&f=png").format == "png"
    with pytest.raises(UnsupportedFormat):
        render(tiff, "w=10", cfg=transform.TransformConfig(source_formats=frozenset({"jpeg"})))


def test_source_pixel_limit_from_header() -> None:
    cfg = transform.TransformConfig(max_source_pixels=100_000)
    with pytest.raises(SourceTooLarge):
        render(LANDSCAPE, "w=10", cfg=cfg)


def test_output_limit_for_extreme_aspect() -> None:
    strip = images.png(images.solid(2000, 2, (1, 2, 3)))
    with pytest.raises(LimitExceeded):
        render(strip, "w=400&h=400&fit=cover")


def test_default_format_follows_source() -> None:
    assert render(images.webp(images.photo(100, 100)), "w=50").format == "webp"
    tiff = bytes(images.photo(50, 50).tiffsave_buffer())
    assert render(tiff, "w=10").format == "jpeg"


def test_options_object_is_hashable() -> None:
    assert hash(TransformOptions(w=1)) == hash(TransformOptions(w=1))
