"""SVG input, for deployments that turn it on: refuse anything that reaches outside the file.

Pure. librsvg (behind libvips' svgload) already refuses most external loads for an in-memory
document, but an origin must not depend on a renderer's defaults: the document is checked here
first. Refused: DTDs and entities (entity expansion, XXE), XInclude, ``<script>``,
``<foreignObject>``, any reference that is not a fragment (``#id``) or an inline
``data:image/...`` URI (files, network, external stylesheets), documents (or gzip-compressed
documents) above the size cap, and ``<use>`` chains that would expand to too many elements.
"""

from __future__ import annotations

import gzip
import re
import zlib
from xml.etree import ElementTree

from proxy.errors import SourceTooLarge, UndecodableImage, UnsupportedFormat

MAX_SVG_BYTES = 2 * 1024 * 1024
# Elements the renderer would draw once every <use> is expanded; nested <use> grows exponentially
# ("billion laughs" without entities), and librsvg cannot be interrupted mid-render.
MAX_EXPANDED_NODES = 100_000
_HREF = ("href", "{http://www.w3.org/1999/xlink}href")
_FORBIDDEN = re.compile(
    rb"<!DOCTYPE|<!ENTITY|XInclude|<xi:|<script|<foreignObject|<\?xml-stylesheet|@import",
    re.IGNORECASE,
)
# href="...", xlink:href='...', src=..., url(...) and the values they carry.
_REFERENCE = re.compile(
    rb"""(?:\b(?:[a-z]+:)?(?:href|src)\s*=\s*(?P<q>["'])(?P<v>.*?)(?P=q))"""
    rb"""|(?:url\(\s*(?P<u>[^)]*)\))""",
    re.IGNORECASE | re.DOTALL,
)
_SAFE_REFERENCE = re.compile(rb"""\s*['"]?\s*(#|data:image/(png|jpeg|gif|webp);base64,)""", re.I)


def _inflate(data: bytes) -> bytes:
    """svgz: decompress with a hard cap, so a gzip bomb costs at most the cap."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, MAX_SVG_BYTES + 1)
    except (zlib.error, gzip.BadGzipFile):
        raise UndecodableImage("compressed SVG is corrupt") from None
    if len(out) > MAX_SVG_BYTES or inflater.unconsumed_tail:
        raise SourceTooLarge("SVG is too large")
    if not inflater.eof:
        raise UndecodableImage("compressed SVG is truncated")
    return out


def checked(data: bytes) -> bytes:
    """The document to hand to the renderer (decompressed), or a 4xx."""
    if data[:2] == b"\x1f\x8b":
        data = _inflate(data)
    if len(data) > MAX_SVG_BYTES:
        raise SourceTooLarge("SVG is too large")
    if _FORBIDDEN.search(data):
        raise UnsupportedFormat("SVG with DTDs, entities, includes or scripts is not allowed")
    for match in _REFERENCE.finditer(data):
        value = match.group("v") if match.group("v") is not None else match.group("u")
        if value is not None and not _SAFE_REFERENCE.match(value):
            raise UnsupportedFormat("SVG with external references is not allowed")
    _check_expansion(data)
    return data


def _check_expansion(data: bytes) -> None:
    # Safe to parse: documents with a DTD (the only way to declare entities) were refused above.
    try:
        root = ElementTree.fromstring(data)  # noqa: S314
    except ElementTree.ParseError:
        raise UndecodableImage("SVG is not well-formed") from None
    by_id = {el.get("id"): el for el in root.iter() if el.get("id")}
    memo: dict[int, int] = {}
    active: set[int] = set()

    def cost(el: ElementTree.Element) -> int:
        key = id(el)
        if key in memo:
            return memo[key]
        if key in active:
            raise UnsupportedFormat("SVG with a reference cycle is not allowed")
        active.add(key)
        total = 1 + sum(cost(child) for child in el)
        ref = next((el.get(a) for a in _HREF if el.get(a)), None)
        if ref is not None and ref.startswith("#") and ref[1:] in by_id:
            total += cost(by_id[ref[1:]])
        active.discard(key)
        if total > MAX_EXPANDED_NODES:
            raise SourceTooLarge("SVG is too complex")
        memo[key] = total
        return total

    try:
        cost(root)
    except RecursionError:
        raise SourceTooLarge("SVG is nested too deeply") from None
