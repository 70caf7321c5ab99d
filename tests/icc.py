"""A minimal ICC v2 RGB matrix/TRC profile, built at test time (no profile files shipped).

Adobe RGB (1998) colorants are the D50-adapted values from Adobe's specification
(https://www.adobe.com/digitalimag/pdfs/AdobeRGB1998.pdf, Annex C), gamma 563/256.
"""

from __future__ import annotations

import struct

D50 = (0.9642, 1.0, 0.82491)
ADOBE_RGB = {
    "r": (0.60974, 0.31111, 0.01947),
    "g": (0.20528, 0.62567, 0.06087),
    "b": (0.14919, 0.06322, 0.74457),
    "gamma": 563 / 256,
}


def _s15f16(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz(values: tuple[float, float, float]) -> bytes:
    return b"XYZ \0\0\0\0" + b"".join(_s15f16(v) for v in values)


def _curve(gamma: float) -> bytes:
    return b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"


def _desc(text: str) -> bytes:
    ascii_text = text.encode("ascii") + b"\0"
    body = b"desc\0\0\0\0" + struct.pack(">I", len(ascii_text)) + ascii_text
    body += struct.pack(">II", 0, 0)  # no Unicode description
    body += struct.pack(">HB", 0, 0) + b"\0" * 67  # no ScriptCode description
    return body


def _text(text: str) -> bytes:
    return b"text\0\0\0\0" + text.encode("ascii") + b"\0"


def rgb_profile(
    description: str,
    red: tuple[float, float, float],
    green: tuple[float, float, float],
    blue: tuple[float, float, float],
    gamma: float,
) -> bytes:
    curve = _curve(gamma)
    tags = [
        (b"desc", _desc(description)),
        (b"cprt", _text("No copyright, test profile")),
        (b"wtpt", _xyz(D50)),
        (b"rXYZ", _xyz(red)),
        (b"gXYZ", _xyz(green)),
        (b"bXYZ", _xyz(blue)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table = b""
    data = b""
    for sig, payload in tags:
        padded = payload + b"\0" * (-len(payload) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(payload))
        data += padded
    body = struct.pack(">I", len(tags)) + table + data
    size = 128 + len(body)
    header = struct.pack(">I", size) + b"\0\0\0\0" + struct.pack(">I", 0x02100000)
    header += b"mntrRGB XYZ " + b"\0" * 12 + b"acsp" + b"\0" * 24
    header += struct.pack(">I", 0) + b"".join(_s15f16(v) for v in D50)
    header += b"\0" * (128 - len(header))
    return header + body


def adobe_rgb() -> bytes:
    return rgb_profile(
        "Adobe RGB (1998) test", ADOBE_RGB["r"], ADOBE_RGB["g"], ADOBE_RGB["b"], ADOBE_RGB["gamma"]
    )
