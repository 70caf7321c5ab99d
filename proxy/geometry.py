"""Output geometry from the source size and the options: the resize, crop and pad sizes, and
the JPEG shrink-on-load factor. Pure arithmetic, no pixels.
"""

from __future__ import annotations

from proxy.options import TransformOptions

_COMPASS_X = {"west": 0.0, "northwest": 0.0, "southwest": 0.0,
              "east": 1.0, "northeast": 1.0, "southeast": 1.0}  # fmt: skip
_COMPASS_Y = {"north": 0.0, "northwest": 0.0, "northeast": 0.0,
              "south": 1.0, "southwest": 1.0, "southeast": 1.0}  # fmt: skip


def scale_to(src: tuple[int, int], scale: float) -> tuple[int, int]:
    return max(1, round(src[0] * scale)), max(1, round(src[1] * scale))


def anchor(gravity: str, focal: tuple[float, float] | None) -> tuple[float, float]:
    if focal is not None:
        return focal
    return _COMPASS_X.get(gravity, 0.5), _COMPASS_Y.get(gravity, 0.5)


def crop_box(
    resized: tuple[int, int], box: tuple[int, int], anchor: tuple[float, float]
) -> tuple[int, int, int, int]:
    rw, rh = resized
    w, h = min(box[0], rw), min(box[1], rh)
    # The anchor is where the focal point should sit; keep the window inside the image.
    left = min(max(round(anchor[0] * rw - w / 2), 0), rw - w)
    top = min(max(round(anchor[1] * rh - h / 2), 0), rh - h)
    return left, top, w, h


def sizes(
    src: tuple[int, int], opts: TransformOptions
) -> tuple[tuple[int, int], tuple[int, int] | None, tuple[int, int] | None]:
    """(resize size, crop box or None, pad canvas or None) for the fit mode."""
    sw, sh = src
    tw, th = opts.width, opts.height
    if tw is None and th is None:
        return src, None, None
    fit = opts.fit
    if tw is None or th is None:
        # One side alone keeps the aspect ratio; only scale-down and crop refuse to enlarge.
        scale = tw / sw if tw is not None else th / sh  # type: ignore[operator]
        if fit in ("scale-down", "crop"):
            scale = min(scale, 1.0)
        return scale_to(src, scale), None, None
    if fit == "fill":
        return (tw, th), None, None
    if fit in ("cover", "crop"):
        scale = max(tw / sw, th / sh)
        if fit == "crop":
            scale = min(scale, 1.0)
        resized = scale_to(src, scale)
        # Rounding may leave the resized side one pixel short of the box.
        if fit == "cover":
            resized = (max(resized[0], tw), max(resized[1], th))
        return resized, (min(tw, resized[0]), min(th, resized[1])), None
    scale = min(tw / sw, th / sh)
    if fit == "scale-down":
        scale = min(scale, 1.0)
    resized = scale_to(src, scale)
    return resized, None, ((tw, th) if fit == "pad" else None)


def jpeg_shrink(stored: tuple[int, int], target: tuple[int, int]) -> int:
    """The largest power of two (up to 8, what libjpeg can do) that keeps the decoded image at
    least as large as the target on both sides, so the final lanczos3 resize only reduces.

    ``thumbnail`` keeps a further 2x margin; measured on photos, dropping it costs no visible
    quality at these sizes and saves about a tenth of the CPU per render.
    """
    factor = 1
    while (
        factor < 8
        and stored[0] // (factor * 2) >= target[0]
        and stored[1] // (factor * 2) >= target[1]
    ):
        factor *= 2
    return factor
