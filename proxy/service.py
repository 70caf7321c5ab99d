"""The request flow: token, options, format, caches, coalescing, origin, transform, headers.

Imports nothing from aiohttp. The hot path (a render already in cache) is kept to dictionary
lookups: a raw request target is verified and parsed once, and what that proved (including a
timed token's expiry, checked on every hit) is remembered under the raw target.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cachetools import LRUCache, TTLCache

from proxy import headers, negotiate, objectkey, options, transform
from proxy.cache import ByteLRU, SingleFlight
from proxy.errors import Forbidden, NotFound
from proxy.metrics import Metrics
from proxy.origin import Origin, SourceMeta, SourceObject
from proxy.signing import Verifier
from proxy.workers import Workers

RenderKey = tuple[str, str, str]  # object key, canonical options, variant


@dataclass(frozen=True, slots=True)
class ImageRequest:
    raw_target: str
    accept: str | None = None
    if_none_match: str | None = None
    if_modified_since: str | None = None


@dataclass(slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    cache: str = "miss"  # hit, miss, coalesced, revalidated
    key: str = ""
    canonical: str = ""


@dataclass(frozen=True, slots=True)
class Target:
    """What verifying and parsing one raw request target proved."""

    key: str
    options: options.TransformOptions
    canonical: str
    expires_at: float | None
    versioned: bool
    tag: str


@dataclass(frozen=True, slots=True)
class Original:
    body: bytes
    meta: SourceMeta
    fetched_at: float

    @property
    def nbytes(self) -> int:
        return len(self.body)


@dataclass(frozen=True, slots=True)
class Render:
    body: bytes
    content_type: str
    etag: str
    modified: float | None
    last_modified: str | None
    vary: bool
    width: int
    height: int

    @property
    def nbytes(self) -> int:
        return len(self.body) + 512


@dataclass(frozen=True, slots=True)
class Shield:
    """The caches and coalescing state of one process."""

    renders: ByteLRU[RenderKey, Render]
    originals: ByteLRU[str, Original]
    targets: LRUCache[str, Target]
    negative: TTLCache[str, bool] | None
    render_flight: SingleFlight[RenderKey, Render] = field(default_factory=SingleFlight)
    fetch_flight: SingleFlight[str, Original] = field(default_factory=SingleFlight)


class Service:
    def __init__(
        self,
        *,
        verifier: Verifier,
        limits: options.Limits,
        transform_config: transform.TransformConfig,
        policy: headers.CachePolicy,
        origin: Origin,
        workers: Workers,
        shield: Shield,
        metrics: Metrics,
        deadline: float,
        allowed_prefixes: tuple[str, ...] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.verifier = verifier
        self.limits = limits
        self.tcfg = transform_config
        self.policy = policy
        self.origin = origin
        self.workers = workers
        self.shield = shield
        self.metrics = metrics
        self.deadline = deadline
        self.allowed_prefixes = allowed_prefixes
        self.clock = clock

    # -- step 1-2: token and options, once per distinct raw target ---------------------------
    def resolve(self, raw_target: str) -> Target:
        cached = self.shield.targets.get(raw_target)
        if cached is not None:
            if cached.expires_at is not None and self.clock() >= cached.expires_at:
                del self.shield.targets[raw_target]
                raise Forbidden("token expired")
            return cached
        verified = self.verifier.verify(raw_target)
        key = objectkey.object_key(verified.path, self.allowed_prefixes)
        opts = options.parse(options.split_query(verified.query), self.limits)
        target = Target(
            key=key,
            options=opts,
            canonical=opts.canonical(),
            expires_at=verified.expires_at,
            versioned=opts.v is not None and verified.expires_at is None,
            tag=headers.cache_tag(verified.path[1:]),
        )
        if self.shield.targets.maxsize:
            self.shield.targets[raw_target] = target
        return target

    # -- the whole flow ------------------------------------------------------------------------
    async def handle(self, req: ImageRequest) -> Reply:
        target = self.resolve(req.raw_target)
        variant = negotiate.variant(target.options, req.accept)
        rkey: RenderKey = (target.key, target.canonical, variant)
        render = self.shield.renders.get(rkey)
        if render is not None:
            self.metrics.cache_lookups.labels("renders", "hit").inc()
            return self._reply(target, render, req, "hit")
        self.metrics.cache_lookups.labels("renders", "miss").inc()
        if req.if_none_match is not None:
            early = await self._conditional_without_render(target, variant, req)
            if early is not None:
                return early
        render, leader = await self.shield.render_flight.run(
            rkey, lambda: self._produce(target, variant, rkey)
        )
        if not leader:
            self.metrics.coalesced.labels("render").inc()
        return self._reply(target, render, req, "miss" if leader else "coalesced")

    async def _conditional_without_render(
        self, target: Target, variant: str, req: ImageRequest
    ) -> Reply | None:
        """A revalidation with a cold render cache: compare ETags from the source's metadata."""
        original = self.shield.originals.get(target.key)
        meta = original.meta if original is not None else await self._stat(target.key)
        tag = headers.etag(meta.etag, target.canonical, variant)
        if not headers.not_modified(
            if_none_match=req.if_none_match, if_modified_since=None, etag_value=tag,
            last_modified=meta.last_modified,
        ):  # fmt: skip
            return None
        modified = headers.http_date(meta.last_modified) if meta.last_modified else None
        out = self._headers(target, tag, modified, target.options.f == "auto")
        return Reply(304, out, cache="revalidated", key=target.key, canonical=target.canonical)

    async def _stat(self, key: str) -> SourceMeta:
        self._check_negative(key)
        try:
            return await self.origin.stat(key)
        except NotFound:
            self._remember_missing(key)
            raise

    def _check_negative(self, key: str) -> None:
        negative = self.shield.negative
        if negative is not None and key in negative:
            self.metrics.cache_lookups.labels("negative", "hit").inc()
            raise NotFound("not found")

    def _remember_missing(self, key: str) -> None:
        if self.shield.negative is not None:
            self.shield.negative[key] = True

    async def _original(self, key: str) -> Original:
        cached = self.shield.originals.get(key)
        if cached is not None:
            self.metrics.cache_lookups.labels("originals", "hit").inc()
            return cached
        self.metrics.cache_lookups.labels("originals", "miss").inc()
        original, leader = await self.shield.fetch_flight.run(key, lambda: self._fetch(key))
        if not leader:
            self.metrics.coalesced.labels("origin").inc()
        return original

    async def _fetch(self, key: str) -> Original:
        self._check_negative(key)
        started = time.perf_counter()
        try:
            source: SourceObject = await self.origin.fetch(key)
        except NotFound:
            self.metrics.origin_requests.labels("not_found").inc()
            self._remember_missing(key)
            raise
        except Exception:
            self.metrics.origin_requests.labels("error").inc()
            raise
        self.metrics.origin_requests.labels("ok").inc()
        self.metrics.origin_bytes.inc(len(source.body))
        self.metrics.stage_seconds.labels("origin").observe(time.perf_counter() - started)
        original = Original(source.body, source.meta, self.clock())
        self.shield.originals.put(key, original)
        return original

    async def _produce(self, target: Target, variant: str, rkey: RenderKey) -> Render:
        original = await self._original(target.key)
        started = time.perf_counter()
        rendered = await self.workers.run(
            self.deadline, transform.render, original.body, target.options, variant, self.tcfg
        )
        self.metrics.stage_seconds.labels("transform").observe(time.perf_counter() - started)
        self.metrics.transforms.labels(rendered.format).inc()
        meta = original.meta
        render = Render(
            body=rendered.body,
            content_type=negotiate.CONTENT_TYPES[rendered.format],
            etag=headers.etag(meta.etag, target.canonical, variant),
            modified=meta.last_modified,
            last_modified=headers.http_date(meta.last_modified) if meta.last_modified else None,
            vary=negotiate.vary_needed(target.options),
            width=rendered.width,
            height=rendered.height,
        )
        self.shield.renders.put(rkey, render)
        return render

    # -- step 6: headers / 304 -----------------------------------------------------------------
    def _headers(
        self, target: Target, etag: str, last_modified: str | None, vary: bool
    ) -> dict[str, str]:
        browser, edge = headers.cache_control(
            self.policy, versioned=target.versioned, expires_at=target.expires_at, now=self.clock()
        )
        out = {
            "ETag": etag,
            "Cache-Control": browser,
            headers.CDN_CACHE_CONTROL: edge,
            "Cache-Tag": target.tag,
        }
        if last_modified:
            out["Last-Modified"] = last_modified
        if vary:
            out["Vary"] = "Accept"
        return out

    def _reply(self, target: Target, render: Render, req: ImageRequest, cache: str) -> Reply:
        out = self._headers(target, render.etag, render.last_modified, render.vary)
        if headers.not_modified(
            if_none_match=req.if_none_match,
            if_modified_since=req.if_modified_since,
            etag_value=render.etag,
            last_modified=render.modified,
        ):
            return Reply(304, out, cache=cache, key=target.key, canonical=target.canonical)
        out["Content-Type"] = render.content_type
        return Reply(200, out, render.body, cache, target.key, target.canonical)


class Readiness:
    """``/readyz``: origin reachable (checked at most every ``interval`` s), not draining."""

    def __init__(self, origin: Origin, workers: Workers, interval: float = 2.0) -> None:
        self.origin = origin
        self.workers = workers
        self.interval = interval
        self.draining = False
        self._checked_at = -interval
        self._last: str | None = None

    async def problem(self) -> str | None:
        """None when ready, else a one-line reason."""
        if self.draining:
            return "draining"
        if self.workers.saturated:
            return "transform queue saturated"
        now = time.monotonic()
        if now - self._checked_at >= self.interval:
            self._checked_at = now
            try:
                await self.origin.ping()
                self._last = None
            except Exception:  # any failure means not ready; the reason is logged by the caller
                self._last = "origin unreachable"
        return self._last
