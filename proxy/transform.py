"""Image transforms with pyvips: synchronous and pure (bytes in, bytes out).

Called only through ``workers.run`` so the event loop never blocks (libvips releases the GIL).

The flow: ``sourceinfo`` admits the source by its magic bytes and probes its header (no pixels
decoded) against the limits, ``plan`` the geometry and format, load with shrink-on-load (JPEG by
the largest power of two, anything else via ``thumbnail_buffer``; orientation applied, colour
managed to sRGB), run ``PIPELINE`` (each step ``(image, plan) -> image``), then ``encode``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyvips

from proxy import geometry, negotiate, sourceinfo
from proxy.errors import LimitExceeded, SourceTooLarge, TransformTimeout, UndecodableImage
from proxy.options import TransformOptions
from proxy.sourceinfo import SourceInfo

Image = Any  # pyvips.Image has no type information
ANIMATED_SOURCES = frozenset({"gif", "webp"})


@dataclass(frozen=True, slots=True)
class TransformConfig:
    source_formats: frozenset[str] = frozenset({"jpeg", "png", "webp", "avif", "gif", "tiff"})
    max_source_pixels: int = 50_000_000
    max_frames: int = 200
    max_animation_pixels: int = 200_000_000
    max_width: int = 4096
    max_height: int = 4096
    max_output_pixels: int = 16_777_216
    fail_on: str = "warning"
    quality_jpeg: int = 80
    quality_webp: int = 79
    quality_avif: int = 63
    effort_webp: int = 2
    effort_avif: int = 2
    effort_png: int = 3

    def quality(self, fmt: str, requested: int | None) -> int:
        if requested is not None:
            return requested
        return {"webp": self.quality_webp, "avif": self.quality_avif}.get(fmt, self.quality_jpeg)


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything the pipeline needs; computed from the header before any pixel is decoded."""

    options: TransformOptions
    format: negotiate.OutputFormat
    animated: bool
    resize: tuple[int, int]  # size after the shrink-on-load resize
    crop: tuple[int, int, int, int] | None  # left, top, width, height (per frame)
    smart_crop: bool
    pad: tuple[int, int] | None  # final canvas when padding
    background: tuple[int, int, int]
    quality: int
    # Only sources with an embedded profile go through lcms; the rest are taken as sRGB (or
    # converted by libvips' built-in CMYK profile), which costs a third less CPU per render.
    colour_manage: bool = False
    source: SourceInfo | None = None


@dataclass(frozen=True, slots=True)
class Rendered:
    body: bytes
    format: negotiate.OutputFormat
    width: int
    height: int  # per frame
    frames: int


def plan(
    info: SourceInfo, opts: TransformOptions, variant_class: str, cfg: TransformConfig
) -> Plan:
    # HEIF/AVIF "pages" are separate images (thumbnails, grids), not frames of an animation.
    animated = info.pages > 1 and opts.anim and info.format in ANIMATED_SOURCES
    fmt = negotiate.choose(
        opts, variant_class, source_format=info.format, has_alpha=info.has_alpha, animated=animated
    )
    animated = animated and fmt in ("webp", "gif")
    if animated:
        if info.pages > cfg.max_frames:
            raise SourceTooLarge(f"animation has {info.pages} frames, above {cfg.max_frames}")
        if info.width * info.height * info.pages > cfg.max_animation_pixels:
            raise SourceTooLarge("animation has too many pixels in total")
    resized, box, pad = geometry.sizes((info.width, info.height), opts)
    crop = None
    if box is not None:
        crop = geometry.crop_box(resized, box, geometry.anchor(opts.g, opts.focal))
    final = pad or (crop[2:] if crop else resized)
    if final[0] > cfg.max_width or final[1] > cfg.max_height:
        raise LimitExceeded(f"output would be {final[0]}x{final[1]}, above the size limit")
    # The intermediate size counts too: covering a box with a thin strip enlarges it hugely.
    if (
        final[0] * final[1] > cfg.max_output_pixels
        or resized[0] * resized[1] > 4 * cfg.max_output_pixels
    ):
        raise LimitExceeded("output would have too many pixels")
    return Plan(
        options=opts,
        format=fmt,
        animated=animated,
        resize=resized,
        crop=crop,
        smart_crop=opts.g == "auto" and crop is not None and not animated,
        pad=pad,
        background=opts.bg or (255, 255, 255),
        quality=cfg.quality(fmt, opts.q),
        colour_manage=info.has_profile,
        source=info,
    )


def load(data: bytes, p: Plan, cfg: TransformConfig) -> Image:
    """Shrink-on-load decode to the planned size, upright and colour managed."""
    kwargs: dict[str, Any] = {"height": p.resize[1], "size": "force"}
    if p.colour_manage:
        # From the embedded profile to sRGB, inside the resize pipeline.
        kwargs["export_profile"] = "srgb"
    # Loader options only reach the loader through option_string.
    kwargs["option_string"] = f"fail_on={cfg.fail_on}" + (",n=-1" if p.animated else "")
    if p.smart_crop and p.crop is not None:
        # libvips resizes to cover the box, then picks the most interesting window itself.
        kwargs.update(height=p.crop[3], size="both", crop="attention")
        return pyvips.Image.thumbnail_buffer(data, p.crop[2], **kwargs)
    if p.source is not None and p.source.format == "jpeg":
        return _load_jpeg(data, p, p.source, cfg)
    return pyvips.Image.thumbnail_buffer(data, p.resize[0], **kwargs)


def _load_jpeg(data: bytes, p: Plan, info: SourceInfo, cfg: TransformConfig) -> Image:
    rotated = info.orientation in (5, 6, 7, 8)
    # Resize in the stored orientation, then turn the small result upright.
    target = (p.resize[1], p.resize[0]) if rotated else p.resize
    stored = (info.height, info.width) if rotated else (info.width, info.height)
    shrink = geometry.jpeg_shrink(stored, target)
    image = pyvips.Image.jpegload_buffer(
        data, shrink=shrink, fail_on=cfg.fail_on, access="sequential"
    )
    # libjpeg read the same header: the size limits were checked on the size it will decode.
    # (Shrunk sides round down or up, depending on the libvips version.)
    loaded = (image.width, image.height)
    if any(not (s // shrink <= n <= -(-s // shrink)) for s, n in zip(stored, loaded, strict=True)):
        raise UndecodableImage("source image header is inconsistent")
    if loaded != target:
        image = image.resize(target[0] / loaded[0], vscale=target[1] / loaded[1], kernel="lanczos3")
    if p.colour_manage:
        image = image.icc_transform("srgb", embedded=True, intent="relative")
    if info.orientation != 1:
        # Turning needs the whole (already small) image, which a sequential read cannot give;
        # materialise it first.
        image = image.copy_memory().autorot()
    return image


def _frames(image: Image) -> tuple[int, int]:
    page_height = image.get("page-height") if "page-height" in image.get_fields() else 0
    if page_height and image.height % page_height == 0 and image.height > page_height:
        return image.height // page_height, page_height
    return 1, image.height


def _per_frame(image: Image, fn: Callable[[Image], Image]) -> Image:
    count, page_height = _frames(image)
    if count == 1:
        return fn(image)
    frames = [fn(image.crop(0, i * page_height, image.width, page_height)) for i in range(count)]
    out = pyvips.Image.arrayjoin(frames, across=1).copy()
    out.set_type(pyvips.GValue.gint_type, "page-height", frames[0].height)
    return out


def to_srgb(image: Image, p: Plan) -> Image:
    if image.interpretation in ("b-w", "grey16"):
        image = image.colourspace("b-w") if image.format != "uchar" else image
    elif image.interpretation != "srgb" or image.format != "uchar":
        image = image.colourspace("srgb")
    if image.format != "uchar":
        image = image.cast("uchar")
    return image


def crop(image: Image, p: Plan) -> Image:
    if p.crop is None or p.smart_crop:
        return image
    left, top, width, height = p.crop
    if (left, top, width, height) == (0, 0, image.width, _frames(image)[1]):
        return image
    return _per_frame(image, lambda frame: frame.crop(left, top, width, height))


def pad(image: Image, p: Plan) -> Image:
    if p.pad is None:
        return image
    width, height = p.pad
    _, frame_height = _frames(image)
    left, top = (width - image.width) // 2, (height - frame_height) // 2
    background = list(p.background)
    if image.bands in (1, 2):
        background = [round(sum(background) / 3)]
    if image.hasalpha():
        background = [*background, 255]
    return _per_frame(
        image,
        lambda f: f.embed(left, top, width, height, extend="background", background=background),
    )


def blur(image: Image, p: Plan) -> Image:
    sigma = p.options.blur
    return image if sigma is None else image.gaussblur(sigma)


def sharpen(image: Image, p: Plan) -> Image:
    amount = p.options.sharpen
    if not amount:
        return image
    # 0..10 scales libvips' unsharp mask on L*: radius, the slopes for flat (m1) and edge (m2)
    # areas, and the brightening/darkening caps; 1 is a mild sharpen after downscaling.
    return image.sharpen(
        sigma=0.5 + amount / 10,
        m1=amount / 10,
        m2=1.0 + amount / 2,
        y2=10 + 2 * amount,
        y3=20 + 2 * amount,
    )


def flatten(image: Image, p: Plan) -> Image:
    if p.format != "jpeg" or not image.hasalpha():
        return image
    background = list(p.background) if image.bands == 4 else [round(sum(p.background) / 3)]
    return image.flatten(background=background)


Step = Callable[[Image, Plan], Image]
PIPELINE: tuple[Step, ...] = (to_srgb, crop, pad, blur, sharpen, flatten)


def encode(image: Image, p: Plan, cfg: TransformConfig) -> bytes:
    q = p.quality
    if p.format == "jpeg":
        data = image.jpegsave_buffer(
            Q=q, optimize_coding=True, interlace=True, keep="none", subsample_mode="auto"
        )
    elif p.format == "webp":
        data = image.webpsave_buffer(Q=q, effort=cfg.effort_webp, keep="none")
    elif p.format == "avif":
        data = image.heifsave_buffer(
            Q=q, compression="av1", effort=cfg.effort_avif, keep="none", bitdepth=8
        )
    elif p.format == "png":
        data = image.pngsave_buffer(compression=6, effort=cfg.effort_png, keep="none")
    else:
        data = image.gifsave_buffer(keep="none")
    return bytes(data)


class Cancel:
    """Lets another thread stop a render: libvips checks the kill flag between tiles and
    abandons the evaluation, so the worker thread is free again within milliseconds.

    (A progress callback could do the same from inside, but calling into Python for every tile
    costs about 5% of the throughput.)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._image: Image = None
        self.cancelled = False

    def attach(self, image: Image) -> None:
        with self._lock:
            self._image = image
            if self.cancelled:
                image.set_kill(True)

    def kill(self) -> None:
        with self._lock:
            self.cancelled = True
            if self._image is not None:
                self._image.set_kill(True)

    def detach(self) -> None:
        # The last reference to a pipeline frees it, and freeing a libvips pipeline is real
        # work: it must happen on the render thread, not wherever this object dies (the event
        # loop, holding the GIL).
        with self._lock:
            self._image = None


def render(
    data: bytes,
    opts: TransformOptions,
    variant_class: str,
    cfg: TransformConfig,
    cancel: Cancel | None = None,
) -> Rendered:
    """A cancelled render raises ``TransformTimeout`` (503)."""
    fmt, data = sourceinfo.admit(data, cfg.source_formats)
    info = sourceinfo.probe(data, fmt, cfg.max_source_pixels)
    p = plan(info, opts, variant_class, cfg)
    try:
        image = load(data, p, cfg)
        for step in PIPELINE:
            image = step(image, p)
        if cancel is not None:
            cancel.attach(image)
        body = encode(image, p, cfg)
    except pyvips.Error as exc:
        if cancel is not None and cancel.cancelled:
            raise TransformTimeout("transform took too long", retry_after=2) from None
        raise UndecodableImage("source image could not be decoded", detail=str(exc)) from None
    finally:
        if cancel is not None:
            cancel.detach()
    count, frame_height = _frames(image) if p.animated else (1, image.height)
    return Rendered(body, p.format, image.width, frame_height, count)
