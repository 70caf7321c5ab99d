"""Originals: the byte-budgeted cache in front of the bucket, with coalescing, revalidation,
a negative cache for missing keys, and stale-if-error when the bucket is down."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from cachetools import TTLCache

from proxy import timing
from proxy.cache import ByteLRU, SingleFlight
from proxy.errors import NotFound, OriginError
from proxy.metrics import Metrics
from proxy.origin import Origin, SourceMeta

log = logging.getLogger("originshield.sources")
# After a failed revalidation, try again this many seconds later rather than on every request.
RETRY_REVALIDATION = 5.0


@dataclass(frozen=True, slots=True)
class Original:
    body: bytes
    meta: SourceMeta
    checked_at: float  # when the origin last confirmed these bytes

    @property
    def nbytes(self) -> int:
        return len(self.body) + 256


class Sources:
    def __init__(
        self,
        origin: Origin,
        *,
        cache: ByteLRU[str, Original],
        negative: TTLCache[str, bool] | None,
        revalidate_after: float,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.origin = origin
        self.cache = cache
        self.negative = negative
        self.revalidate_after = revalidate_after
        self.metrics = metrics
        self.clock = clock
        self._flight: SingleFlight[str, Original] = SingleFlight()

    def is_stale(self, checked_at: float) -> bool:
        """0 turns revalidation off: an object is then fresh until evicted."""
        return bool(self.revalidate_after) and self.clock() - checked_at >= self.revalidate_after

    async def get(self, key: str) -> Original:
        cached = self.cache.get(key)
        if cached is not None and not self.is_stale(cached.checked_at):
            self.metrics.lookup("originals", "hit")
            return cached
        if cached is not None:
            self.metrics.lookup("originals", "stale")
            work = lambda: self._revalidate(key, cached)  # noqa: E731
        else:
            self.metrics.lookup("originals", "miss")
            work = lambda: self._fetch(key)  # noqa: E731
        original, leader = await self._flight.run(key, work)
        if not leader:
            self.metrics.coalesced.labels("origin").inc()
        return original

    async def meta(self, key: str) -> SourceMeta:
        """Metadata without the body: from a fresh cache entry, else a HEAD request."""
        cached = self.cache.get(key)
        if cached is not None and not self.is_stale(cached.checked_at):
            return cached.meta
        self._check_negative(key)
        try:
            meta = await self.origin.stat(key)
        except NotFound:
            self._not_found(key)
            raise
        self.metrics.origin_requests.labels("ok").inc()
        return meta

    def _check_negative(self, key: str) -> None:
        if self.negative is None:
            return
        if key in self.negative:
            self.metrics.lookup("negative", "hit")
            raise NotFound("not found")
        self.metrics.lookup("negative", "miss")

    def _not_found(self, key: str) -> None:
        """The origin says the key does not exist: count it, forget it, remember its absence."""
        self.metrics.origin_requests.labels("not_found").inc()
        self.cache.pop(key)
        if self.negative is not None:
            self.negative[key] = True

    async def _fetch(self, key: str) -> Original:
        self._check_negative(key)
        started = time.perf_counter()
        try:
            source = await self.origin.fetch(key)
        except NotFound:
            self._not_found(key)
            raise
        except Exception:
            self.metrics.origin_requests.labels("error").inc()
            raise
        assert source is not None  # no condition was sent
        self.metrics.origin_requests.labels("ok").inc()
        self.metrics.origin_bytes.inc(len(source.body))
        elapsed = time.perf_counter() - started
        self.metrics.stage("origin", elapsed)
        timing.record("origin", elapsed)
        original = Original(source.body, source.meta, self.clock())
        self.cache.put(key, original)
        return original

    async def _revalidate(self, key: str, cached: Original) -> Original:
        """Conditional GET: a 304 keeps the cached bytes; a failing origin leaves them in use."""
        try:
            source = await self.origin.fetch(key, if_none_match=cached.meta.etag)
        except NotFound:
            self._not_found(key)
            raise
        except OriginError as exc:
            self.metrics.origin_requests.labels("error").inc()
            log.warning("revalidation failed, serving the cached original: %s", exc.detail)
            retry_at = self.clock() - self.revalidate_after + RETRY_REVALIDATION
            kept = dataclasses.replace(cached, checked_at=retry_at)
            self.cache.put(key, kept)
            return kept
        if source is None:
            self.metrics.origin_requests.labels("not_modified").inc()
            refreshed = dataclasses.replace(cached, checked_at=self.clock())
        else:
            self.metrics.origin_requests.labels("ok").inc()
            self.metrics.origin_bytes.inc(len(source.body))
            refreshed = Original(source.body, source.meta, self.clock())
        self.cache.put(key, refreshed)
        return refreshed
