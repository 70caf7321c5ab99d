"""What stands between a request and a transform, per process: the render cache, the verified
URLs, the coalescing of identical renders and the refreshes in progress."""

from __future__ import annotations

from dataclasses import dataclass, field

from cachetools import LRUCache

from proxy.cache import ByteLRU, SingleFlight
from proxy.options import TransformOptions

RenderKey = tuple[str, str, str]  # object key, canonical options, variant


@dataclass(frozen=True, slots=True)
class Target:
    """What verifying and parsing one raw request target proved."""

    key: str
    options: TransformOptions
    canonical: str
    expires_at: float | None
    versioned: bool
    tag: str
    # ETag -> the 200 headers of that render: for permanent tokens they never change, so a hit
    # reuses them instead of formatting them again. (Keyed by ETag, not by the render, so no
    # body is kept alive here after the render cache let it go.)
    prebuilt: dict[str, dict[str, str]] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True, slots=True)
class Render:
    body: bytes
    content_type: str
    etag: str
    source_etag: str
    modified: float | None
    last_modified: str | None
    vary: bool
    checked_at: float

    @property
    def nbytes(self) -> int:
        return len(self.body) + 512


@dataclass(slots=True)
class Shield:
    """The per-process caches and coalescing state in front of the transforms."""

    renders: ByteLRU[RenderKey, Render]
    targets: LRUCache[str, Target]
    flight: SingleFlight[RenderKey, Render] = field(default_factory=SingleFlight)
    refreshing: set[RenderKey] = field(default_factory=set)
