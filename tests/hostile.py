"""Hostile sources, generated at test time."""

from __future__ import annotations

import struct
import zlib

from tests import images


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_declaring(width: int, height: int, padding: int = 500_000) -> bytes:
    """A PNG whose header declares a huge canvas; the body is a small run of zeros."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * padding, 9)
    chunks = _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def gif_declaring(width: int, height: int) -> bytes:
    """A GIF89a with a huge logical screen and one 1x1 frame."""
    header = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0)
    palette = b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return header + palette + frame + b"\x3b"


def truncated_jpeg() -> bytes:
    data = images.jpeg(images.photo(600, 400))
    return data[: len(data) * 2 // 3]


def truncated_png() -> bytes:
    data = images.png(images.photo(300, 200))
    return data[: len(data) // 2]


def corrupt_scan_jpeg() -> bytes:
    """A stray restart marker in the middle of the entropy-coded data."""
    data = images.jpeg(images.photo(600, 400))
    sos = data.index(b"\xff\xda")
    return data[: sos + 300] + b"\xff\xd3" + data[sos + 300 :]


SVG_XXE = b"""<?xml version="1.0"?>
<!DOCTYPE svg [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<svg xmlns="http://www.w3.org/2000/svg" width="200" height="50"><text y="20">&xxe;</text></svg>
"""
SVG_FILE_IMAGE = b"""<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"
 width="100" height="100"><image href="file:///etc/passwd" width="100" height="100"/>
 <image xlink:href="/etc/hostname" width="10" height="10"/></svg>
"""
SVG_BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE svg [
 <!ENTITY a "lollollollollollollollollollol">
 <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
 <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
 <!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">
 <!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;">
]>
<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><text>&e;</text></svg>
"""


def svg_nested_use(levels: int = 12) -> bytes:
    """Exponential <use> expansion without any entity: 10**levels rectangles."""
    defs = ['<g id="l0"><rect width="1" height="1"/></g>']
    for i in range(1, levels + 1):
        uses = "".join(f'<use href="#l{i - 1}" x="{k}"/>' for k in range(10))
        defs.append(f'<g id="l{i}">{uses}</g>')
    body = f'<defs>{"".join(defs)}</defs><use href="#l{levels}"/>'
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100">{body}</svg>'.encode()


SVG_SAFE = b"""<svg xmlns="http://www.w3.org/2000/svg" width="120" height="60">
<defs><linearGradient id="g"><stop offset="0" stop-color="#f00"/>
<stop offset="1" stop-color="#00f"/></linearGradient></defs>
<rect width="120" height="60" fill="url(#g)"/></svg>
"""
