"""Test images drawn with pyvips at test time."""

from __future__ import annotations

from typing import Any

import pyvips

RED = (220, 30, 30)
BLUE = (30, 60, 220)


def solid(width: int, height: int, rgb: tuple[int, int, int]) -> Any:
    return (
        pyvips.Image.black(width, height, bands=3)
        .new_from_image(list(rgb))
        .copy(interpretation="srgb")
    )


def marked(width: int, height: int) -> Any:
    """Blue picture with a red block in its top-left quarter: shows rotation and mirroring."""
    base = solid(width, height, BLUE)
    block = solid(width // 2, height // 2, RED)
    return base.insert(block, 0, 0).copy(interpretation="srgb")


def photo(width: int, height: int) -> Any:
    """A smooth gradient with some texture: compresses like a photo, not like flat colour."""
    xy = pyvips.Image.xyz(width, height)
    r = (xy[0] * (255 / max(1, width))).cast("uchar")
    g = (xy[1] * (255 / max(1, height))).cast("uchar")
    noise = pyvips.Image.gaussnoise(width, height, sigma=12, mean=128).cast("uchar")
    return r.bandjoin([g, noise]).copy(interpretation="srgb")


def jpeg(image: Any, q: int = 90) -> bytes:
    return bytes(image.jpegsave_buffer(Q=q))


def png(image: Any) -> bytes:
    return bytes(image.pngsave_buffer())


def webp(image: Any) -> bytes:
    return bytes(image.webpsave_buffer())


def transpose(image: Any) -> Any:
    return image.rot90().fliphor()


def transverse(image: Any) -> Any:
    return image.rot270().fliphor()


# EXIF orientation n -> how to store an upright picture so that a viewer applying n shows it
# upright (the inverse of each orientation's display transform, from the EXIF 2.3 table).
STORE_FOR_ORIENTATION = {
    1: lambda im: im,
    2: lambda im: im.fliphor(),
    3: lambda im: im.rot180(),
    4: lambda im: im.flipver(),
    5: transpose,
    6: lambda im: im.rot270(),
    7: transverse,
    8: lambda im: im.rot90(),
}


def with_orientation(upright: Any, orientation: int) -> bytes:
    stored = STORE_FOR_ORIENTATION[orientation](upright).copy()
    stored.set_type(pyvips.GValue.gint_type, "orientation", orientation)
    return bytes(stored.jpegsave_buffer(Q=92, keep="exif"))


def decode(body: bytes) -> Any:
    return pyvips.Image.new_from_buffer(body, "")


def mean_rgb(image: Any, left: int, top: int, width: int, height: int) -> tuple[float, ...]:
    region = image.crop(left, top, width, height)
    return tuple(region[i].avg() for i in range(min(3, region.bands)))
