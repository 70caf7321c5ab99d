"""What a source image is, decided before any pixel is decoded.

``sniff`` the magic bytes (never the extension or Content-Type), ``admit`` against the allowlist,
``probe`` the header against the size limits. JPEG headers are read in Python (``jpegheader``);
everything else, and any JPEG out of the ordinary, through libvips' header-only load.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyvips

from proxy import jpegheader, svg
from proxy.errors import SourceTooLarge, UndecodableImage, UnsupportedFormat


@dataclass(frozen=True, slots=True)
class SourceInfo:
    format: str
    width: int  # as displayed, after EXIF orientation
    height: int
    pages: int
    has_alpha: bool
    has_profile: bool = False
    orientation: int = 1


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


def admit(data: bytes, allowed: frozenset[str]) -> tuple[str, bytes]:
    """(format, the bytes to decode): by magic bytes against the allowlist."""
    if not data:
        raise UndecodableImage("source is empty")
    fmt = sniff(data)
    if fmt is None:
        raise UndecodableImage("source is not a recognised image")
    if fmt not in allowed:
        raise UnsupportedFormat(f"source format {fmt} is not allowed")
    if fmt == "svg":
        data = svg.checked(data)
    return fmt, data


def _gif_screen(data: bytes) -> tuple[int, int]:
    """The logical screen a GIF declares (libvips reports the frames; decoders may allocate it)."""
    return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")


def probe(data: bytes, fmt: str, max_pixels: int) -> SourceInfo:
    """Read the header only and enforce the source limits before decoding pixels."""
    if fmt == "jpeg":
        header = jpegheader.read(data)
        if header is not None:
            info = SourceInfo(
                "jpeg", header.width, header.height, 1, False, header.has_profile,
                header.orientation,
            )  # fmt: skip
            return _upright(_within(info, max_pixels))
    if fmt == "gif":
        screen_w, screen_h = _gif_screen(data)
        if screen_w * screen_h > max_pixels:
            raise SourceTooLarge(f"source image declares {screen_w}x{screen_h} pixels")
    return _upright(_within(_libvips_header(data, fmt), max_pixels))


def _libvips_header(data: bytes, fmt: str) -> SourceInfo:
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
    return SourceInfo(
        fmt, width, height, max(1, int(pages)), has_alpha, has_profile, int(orientation or 1)
    )


def _within(info: SourceInfo, max_pixels: int) -> SourceInfo:
    if info.width * info.height > max_pixels:
        raise SourceTooLarge(
            f"source image is {info.width}x{info.height}, above {max_pixels} pixels"
        )
    return info


def _upright(info: SourceInfo) -> SourceInfo:
    """Width and height as displayed: orientations 5-8 turn the image by a quarter."""
    if info.orientation in (5, 6, 7, 8):
        return SourceInfo(
            info.format, info.height, info.width, info.pages, info.has_alpha, info.has_profile,
            info.orientation,
        )  # fmt: skip
    return info
