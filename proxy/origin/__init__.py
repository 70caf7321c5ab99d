"""Where originals come from: the ``Origin`` protocol and its two implementations.

``S3Origin`` talks to Backblaze B2 (or any S3-protocol server) through aiobotocore;
``LocalOrigin`` reads a folder, for development. Both raise only ``errors.ProxyError`` subclasses:
``NotFound`` for a missing object, ``SourceTooLarge`` past ``max_object_bytes``, ``OriginTimeout``
and ``OriginError`` for everything else that goes wrong on the way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class SourceMeta:
    etag: str
    last_modified: float | None  # seconds since the epoch
    size: int
    content_type: str = ""


@dataclass(frozen=True, slots=True)
class SourceObject:
    body: bytes
    meta: SourceMeta


class Origin(Protocol):
    async def fetch(self, key: str, *, if_none_match: str | None = None) -> SourceObject | None:
        """The object, or None when ``if_none_match`` still matches (not modified)."""

    async def stat(self, key: str) -> SourceMeta: ...

    async def put(self, key: str, body: bytes, content_type: str) -> None:
        """Store an object (result storage)."""

    async def ping(self) -> None:
        """Raise if the origin cannot be reached; cheap enough for a readiness probe."""

    async def close(self) -> None: ...
