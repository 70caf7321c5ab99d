"""The few facts a JPEG's header gives away, read from its markers in pure Python. Pure.

Reading them here costs a few microseconds; asking libvips costs a loader, a libjpeg header
parse and an EXIF parse (about a tenth of a millisecond, and the GIL several times). Anything
out of the ordinary (CMYK, 12-bit, a second EXIF block, an odd orientation, a malformed
segment) answers None, and the caller asks libvips instead. libjpeg reads the same SOF marker,
and the loader's size is checked against this one before any pixel is decoded.

Marker layout: ITU-T T.81 annex B; EXIF orientation: CIPA DC-008 (tag 0x0112 in IFD0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Start-of-frame markers carry the size: SOF0-3, 5-7, 9-11, 13-15 (C4, C8, CC are not frames).
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM and RSTn have no length
_SOS = 0xDA
_EXIF = b"Exif\x00\x00"
_ICC = b"ICC_PROFILE\x00"
_ORIENTATION = 0x0112


@dataclass(frozen=True, slots=True)
class JpegHeader:
    width: int  # as stored, before EXIF orientation
    height: int
    components: int  # 1 (grey) or 3 (YCbCr or RGB)
    orientation: int  # 1-8
    has_profile: bool


def read(data: bytes) -> JpegHeader | None:
    """The header of an 8-bit grey or colour JPEG, or None to let libvips decide."""
    if not data.startswith(b"\xff\xd8"):
        return None
    pos, end = 2, len(data)
    size: tuple[int, int, int] | None = None
    orientation: int | None = None
    has_profile = False
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2 or pos + 2 + length > end:
            return None
        segment = data[pos + 4 : pos + 2 + length]
        if marker == _SOS:
            break
        if marker in _SOF:
            if size is not None or len(segment) < 6 or segment[0] != 8:
                return None
            height = int.from_bytes(segment[1:3], "big")
            width = int.from_bytes(segment[3:5], "big")
            size = (width, height, segment[5])
        elif marker == 0xE1 and segment.startswith(_EXIF):
            if orientation is not None:
                return None
            orientation = _exif_orientation(segment[len(_EXIF) :])
            if orientation is None:
                return None
        elif marker == 0xE2 and segment.startswith(_ICC):
            has_profile = True
        pos += 2 + length
    else:
        return None  # no start of scan: truncated or not a baseline layout
    if size is None or size[0] == 0 or size[1] == 0 or size[2] not in (1, 3):
        return None
    return JpegHeader(size[0], size[1], size[2], orientation or 1, has_profile)


def _exif_orientation(tiff: bytes) -> int | None:
    """Orientation from IFD0 of the TIFF structure in an EXIF block: 1 when absent, None when
    the block is malformed or the value is outside 1-8."""
    if len(tiff) < 8:
        return None
    order = tiff[:2]
    endian: Literal["little", "big"]
    if order == b"II":
        endian = "little"
    elif order == b"MM":
        endian = "big"
    else:
        return None
    if int.from_bytes(tiff[2:4], endian) != 42:
        return None
    ifd = int.from_bytes(tiff[4:8], endian)
    if ifd < 8 or ifd + 2 > len(tiff):
        return None
    count = int.from_bytes(tiff[ifd : ifd + 2], endian)
    if ifd + 2 + 12 * count > len(tiff):
        return None
    for i in range(count):
        entry = ifd + 2 + 12 * i
        if int.from_bytes(tiff[entry : entry + 2], endian) != _ORIENTATION:
            continue
        kind = int.from_bytes(tiff[entry + 2 : entry + 4], endian)
        n = int.from_bytes(tiff[entry + 4 : entry + 8], endian)
        if kind != 3 or n != 1:  # one SHORT
            return None
        value = int.from_bytes(tiff[entry + 8 : entry + 10], endian)
        return value if 1 <= value <= 8 else None
    return 1
