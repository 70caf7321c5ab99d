"""Sample product images for the embedded development default, drawn with pyvips."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyvips

SAMPLES = ("products/1.jpg", "products/2.png", "products/3.jpg", "products/4.gif")


def _disc(width: int, height: int, cx: float, cy: float, r: float) -> Any:
    xy = pyvips.Image.xyz(width, height)
    dist = ((xy[0] - cx) ** 2 + (xy[1] - cy) ** 2) ** 0.5
    return (dist < r).ifthenelse(255, 0).cast("uchar")


def _product(width: int, height: int, hue: tuple[int, int, int]) -> Any:
    """A lit backdrop with a coloured disc: enough structure to see crops and colour."""
    xy = pyvips.Image.xyz(width, height)
    shade = (xy[1] * (80 / height) + 160).cast("uchar")
    backdrop = shade.bandjoin([shade, shade]).copy(interpretation="srgb")
    disc = _disc(width, height, width * 0.5, height * 0.55, min(width, height) * 0.3)
    colour = pyvips.Image.black(width, height, bands=3).new_from_image(list(hue))
    return (disc > 0).ifthenelse(colour, backdrop).cast("uchar").copy(interpretation="srgb")


def generate(root: Path) -> list[str]:
    """Write the samples under ``root`` unless they exist; returns their keys."""
    products = root / "products"
    products.mkdir(parents=True, exist_ok=True)
    if not (root / SAMPLES[0]).exists():
        _product(1600, 1200, (200, 40, 40)).jpegsave(str(root / SAMPLES[0]), Q=90)
    if not (root / SAMPLES[1]).exists():
        rgb = _product(800, 800, (40, 120, 220))
        alpha = _disc(800, 800, 400, 440, 240)
        rgb.bandjoin(alpha).copy(interpretation="srgb").pngsave(str(root / SAMPLES[1]))
    if not (root / SAMPLES[2]).exists():
        # Stored sideways with EXIF orientation 6, as phone cameras do.
        upright = _product(1200, 1600, (40, 160, 80))
        stored = upright.rot270().copy()
        stored.set_type(pyvips.GValue.gint_type, "orientation", 6)
        stored.jpegsave(str(root / SAMPLES[2]), Q=90)
    if not (root / SAMPLES[3]).exists():
        frames = [_product(320, 240, (40 * i, 200 - 30 * i, 120)) for i in range(6)]
        anim = pyvips.Image.arrayjoin(frames, across=1).copy()
        anim.set_type(pyvips.GValue.gint_type, "page-height", 240)
        anim.set_type(pyvips.GValue.array_int_type, "delay", [200] * 6)
        anim.gifsave(str(root / SAMPLES[3]))
    return list(SAMPLES)
