"""Image transforms with pyvips: synchronous and pure (bytes in, bytes out).

Called only through ``workers.run`` so the event loop never blocks (libvips releases the GIL).

The flow: ``sniff`` the magic bytes (never the extension or Content-Type), ``probe`` the header
(no pixels decoded) against the limits, ``plan`` the geometry and format, load with shrink-on-load
via ``thumbnail_buffer`` (orientation applied, colour managed to sRGB), run ``PIPELINE`` (each step
``(image, plan) -> image``), then ``encode``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyvips

from proxy import negotiate, svg
from proxy.errors import (
    LimitExceeded,
    SourceTooLarge,
    TransformTimeout,
    UndecodableImage,
    UnsupportedFormat,
)
from proxy.options import TransformOptions

Image = Any  # pyvips.Image has no type information
ALL_SOURCE_FORMATS = frozenset({"jpeg", "png", "webp", "avif", "gif", "tiff", "svg", "heif"})
_COMPASS_X = {"west": 0.0, "northwest": 0.0, "southwest": 0.0,
              "east": 1.0, "northeast": 1.0, "southeast": 1.0}  # fmt: skip
_COMPASS_Y = {"north": 0.0, "northwest": 0.0, "northeast": 0.0,
              "south": 1.0, "southwest": 1.0, "southeast": 1.0}  # fmt: skip
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
class SourceInfo:
    format: str
    width: int  # as displayed, after EXIF orientation
    height: int
    pages: int
    has_alpha: bool
    has_profile: bool = False
    orientation: int = 1


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


def sniff(data: bytes) -> str | None:
    """The source format from its magic bytes, or None for anything unrecognised."""
    head = data[:64]
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    # Classic TIFF and BigTIFF, both byte orders.
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[4:8] == b"ftyp":
        box = int.from_bytes(head[:4], "big")
        brands = {data[i : i + 4] for i in range(8, min(box, 64), 4)}
        if brands & {b"avif", b"avis"}:
            return "avif"
        if brands & {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}:
            return "heif"
        return None
    if head.startswith(b"\x1f\x8b"):
        return "svg"  # svgz; checked and decompressed by the svg module
    text = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"<") and b"<svg" in text:
        return "svg"
    return None


def admit(data: bytes, cfg: TransformConfig) -> tuple[str, bytes]:
    """(format, the bytes to decode): by magic bytes against the allowlist."""
    if not data:
        raise UndecodableImage("source is empty")
    fmt = sniff(data)
    if fmt is None:
        raise UndecodableImage("source is not a recognised image")
    if fmt not in cfg.source_formats:
        raise UnsupportedFormat(f"source format {fmt} is not allowed")
    if fmt == "svg":
        data = svg.checked(data)
    return fmt, data


def _gif_screen(data: bytes) -> tuple[int, int]:
    """The logical screen a GIF declares (libvips reports the frames; decoders may allocate it)."""
    return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")


def probe(data: bytes, fmt: str, cfg: TransformConfig) -> SourceInfo:
    """Read the header only and enforce the source limits before decoding pixels."""
    if fmt == "gif":
        screen_w, screen_h = _gif_screen(data)
        if screen_w * screen_h > cfg.max_source_pixels:
            raise SourceTooLarge(f"source image declares {screen_w}x{screen_h} pixels")
    try:
        header = pyvips.Image.new_from_buffer(data, "", access="sequential")
        width, height = header.width, header.height
        fields = set(header.get_fields())
        pages = header.get("n-pages") if "n-pages" in fields else 1
        page_height = header.get("page-height") if "page-height" in fields else height
        orientation = header.get("orientation") if "orientation" in fields else 1
        has_alpha = bool(header.hasalpha())
        has_profile = "icc-profile-data" in fields
    except pyvips.Error as exc:
        raise UndecodableImage("source image header could not be read", detail=str(exc)) from None
    if pages > 1 and page_height and height == page_height * pages:
        height = page_height
    if width * height > cfg.max_source_pixels:
        raise SourceTooLarge(
            f"source image is {width}x{height}, above {cfg.max_source_pixels} pixels"
        )
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return SourceInfo(
        fmt, width, height, max(1, int(pages)), has_alpha, has_profile, int(orientation or 1)
    )


def _scale_to(src: tuple[int, int], scale: float) -> tuple[int, int]:
    return max(1, round(src[0] * scale)), max(1, round(src[1] * scale))


def _anchor(gravity: str, focal: tuple[float, float] | None) -> tuple[float, float]:
    if focal is not None:
        return focal
    return _COMPASS_X.get(gravity, 0.5), _COMPASS_Y.get(gravity, 0.5)


def _crop_box(
    resized: tuple[int, int], box: tuple[int, int], anchor: tuple[float, float]
) -> tuple[int, int, int, int]:
    rw, rh = resized
    w, h = min(box[0], rw), min(box[1], rh)
    # The anchor is where the focal point should sit; keep the window inside the image.
    left = min(max(round(anchor[0] * rw - w / 2), 0), rw - w)
    top = min(max(round(anchor[1] * rh - h / 2), 0), rh - h)
    return left, top, w, h


def _geometry(
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
        return _scale_to(src, scale), None, None
    if fit == "fill":
        return (tw, th), None, None
    if fit in ("cover", "crop"):
        scale = max(tw / sw, th / sh)
        if fit == "crop":
            scale = min(scale, 1.0)
        resized = _scale_to(src, scale)
        # Rounding may leave the resized side one pixel short of the box.
        if fit == "cover":
            resized = (max(resized[0], tw), max(resized[1], th))
        return resized, (min(tw, resized[0]), min(th, resized[1])), None
    scale = min(tw / sw, th / sh)
    if fit == "scale-down":
        scale = min(scale, 1.0)
    resized = _scale_to(src, scale)
    return resized, None, ((tw, th) if fit == "pad" else None)


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
    resized, box, pad = _geometry((info.width, info.height), opts)
    crop = None
    if box is not None:
        crop = _crop_box(resized, box, _anchor(opts.g, opts.focal))
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


def _load_jpeg(data: bytes, p: Plan, info: SourceInfo, cfg: TransformConfig) -> Image:
    rotated = info.orientation in (5, 6, 7, 8)
    # Resize in the stored orientation, then turn the small result upright.
    target = (p.resize[1], p.resize[0]) if rotated else p.resize
    stored = (info.height, info.width) if rotated else (info.width, info.height)
    image = pyvips.Image.jpegload_buffer(
        data, shrink=jpeg_shrink(stored, target), fail_on=cfg.fail_on, access="sequential"
    )
    if (image.width, image.height) != target:
        image = image.resize(
            target[0] / image.width, vscale=target[1] / image.height, kernel="lanczos3"
        )
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
    fmt, data = admit(data, cfg)
    info = probe(data, fmt, cfg)
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
