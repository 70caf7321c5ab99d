"""The physical limit: a Python loop straight on libvips, no HTTP, no framework.

JPEG shrink-on-load by the largest power of two that keeps the image at least as wide as the
target, then a lanczos3 resize to the exact width, then the encoder; N threads (libvips releases
the GIL). ``--thumbnail`` measures ``thumbnail_buffer`` the same way instead.
Prints one JSON line: requests per second, mean output bytes, output sizes seen.
"""

from __future__ import annotations

import argparse
import json
import math
import threading
import time
from pathlib import Path
from typing import Any

import pyvips

EFFORT = 4  # libvips' default, as in the reference measurements


def shrink_factor(width: int, target: int) -> int:
    factor = 1
    while factor < 8 and width // (factor * 2) >= target:
        factor *= 2
    return factor


def render_limit(data: bytes, target: int, fmt: str, q: int) -> bytes:
    header = pyvips.Image.new_from_buffer(data, "")
    factor = shrink_factor(header.width, target)
    image = pyvips.Image.jpegload_buffer(data, shrink=factor, access="sequential")
    image = image.resize(target / image.width, kernel="lanczos3")
    return encode(image, fmt, q)


def render_thumbnail(data: bytes, target: int, fmt: str, q: int) -> bytes:
    return encode(pyvips.Image.thumbnail_buffer(data, target, height=100_000), fmt, q)


def encode(image: Any, fmt: str, q: int) -> bytes:
    if fmt == "webp":
        return bytes(image.webpsave_buffer(Q=q, effort=EFFORT, keep="none"))
    return bytes(image.jpegsave_buffer(Q=q, interlace=True, optimize_coding=True, keep="none"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", required=True)
    parser.add_argument("--format", choices=["webp", "jpeg"], required=True)
    parser.add_argument("--quality", type=int, required=True)
    parser.add_argument("--width", type=int, default=400)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--thumbnail", action="store_true")
    args = parser.parse_args()
    pyvips.cache_set_max(0)
    sources = [p.read_bytes() for p in sorted(Path(args.images).glob("*.jpg"))]
    render = render_thumbnail if args.thumbnail else render_limit
    done = 0
    out_bytes = 0
    sizes: set[tuple[int, int]] = set()
    lock = threading.Lock()
    stop = time.monotonic() + args.seconds

    def worker(offset: int) -> None:
        nonlocal done, out_bytes
        i = offset
        while time.monotonic() < stop:
            body = render(sources[i % len(sources)], args.width, args.format, args.quality)
            i += 1
            with lock:
                done += 1
                out_bytes += len(body)
                if len(sizes) < 16:
                    img = pyvips.Image.new_from_buffer(body, "")
                    sizes.add((img.width, img.height))

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    print(
        json.dumps(
            {
                "rps": done / elapsed,
                "mean_bytes": out_bytes / max(1, done),
                "requests": done,
                "sizes": sorted(sizes),
                "ok": not math.isnan(done),
            }
        )
    )


if __name__ == "__main__":
    main()
