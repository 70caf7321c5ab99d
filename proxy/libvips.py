"""Process-wide libvips: the security and cache settings, and its memory statistics."""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import pyvips


def configure(*, svg_enabled: bool, threads: int = 1) -> None:
    # Loaders libvips marks untrusted (magick, matload, svgload, …) must never see internet input.
    pyvips.block_untrusted_set(True)
    # SVG only when the operator turned it on; the svg module vets every document first.
    pyvips.operation_block_set("VipsForeignLoadSvg", not svg_enabled)
    # Each render decodes a different source; the operation cache would only hold memory.
    pyvips.cache_set_max(0)
    if threads:
        pyvips.concurrency_set(threads)


def version() -> str:
    return ".".join(str(pyvips.version(i)) for i in range(3))


@functools.cache
def _library() -> ctypes.CDLL | None:
    """The libvips that pyvips loaded (pyvips exposes no memory statistics itself)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        path = line.rsplit(" ", 1)[-1]
        if "/libvips" in path and ".so" in path:
            lib = ctypes.CDLL(path)
            lib.vips_tracked_get_mem.restype = ctypes.c_size_t
            return lib
    return None


def tracked_memory() -> int | None:
    """Bytes libvips has allocated for pixel buffers right now, or None where unknown."""
    lib = _library()
    return int(lib.vips_tracked_get_mem()) if lib is not None else None
