"""The request flow: token, options, format, caches, coalescing, origin, transform, headers.

Imports nothing from aiohttp. The hot path (a render already in cache) is kept to dictionary
lookups: a raw request target is verified and parsed once, and what that proved (including a
timed token's expiry, checked on every hit) is remembered under the raw target. A render older
than ``cache.revalidate_after`` is still served at once while its original is revalidated in
the background (stale-while-revalidate).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from proxy import headers, libvips, negotiate, objectkey, options, transform
from proxy.errors import Forbidden, NotFound, OriginTimeout, Overloaded, ProxyError
from proxy.metrics import Metrics
from proxy.results import ResultStorage
from proxy.shield import Render, RenderKey, Shield, Target
from proxy.signing import Verifier
from proxy.sources import Original, Sources
from proxy.tasks import Background
from proxy.workers import Workers

log = logging.getLogger("originshield")
# The request deadline trails the transform deadline so that a slow queue answers 503 (retry)
# and only a slow origin answers 504.
DEADLINE_MARGIN = 1.0


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
    cache: str = "miss"  # hit, stale, miss, coalesced, stored, revalidated
    key: str = ""
    canonical: str = ""


class Service:
    def __init__(
        self,
        *,
        verifier: Verifier,
        limits: options.Limits,
        transform_config: transform.TransformConfig,
        policy: headers.CachePolicy,
        sources: Sources,
        workers: Workers,
        shield: Shield,
        metrics: Metrics,
        deadline: float,
        background: Background,
        results: ResultStorage | None = None,
        allowed_prefixes: tuple[str, ...] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.verifier = verifier
        self.limits = limits
        self.tcfg = transform_config
        self.policy = policy
        self.sources = sources
        self.workers = workers
        self.shield = shield
        self.metrics = metrics
        self.deadline = deadline
        self.background = background
        self.results = results
        self.allowed_prefixes = allowed_prefixes
        self.clock = clock

    # -- steps 1-2: token and options, once per distinct raw target ---------------------------
    def resolve(self, raw_target: str) -> Target:
        cached = self.shield.targets.get(raw_target)
        if cached is not None:
            if cached.expires_at is not None and self.clock() >= cached.expires_at:
                del self.shield.targets[raw_target]
                raise Forbidden("token expired")
            return cached
        verified = self.verifier.verify(raw_target)
        key = objectkey.object_key(verified.path, self.allowed_prefixes)
        if self.results is not None and self.results.owns(key):
            raise NotFound("not found")
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

    # -- the hot path --------------------------------------------------------------------------
    def cached_reply(
        self,
        raw_target: str,
        accept: str | None,
        if_none_match: str | None,
        if_modified_since: str | None,
    ) -> Reply | None:
        """A fresh render already in cache for a URL already verified, or None.

        Synchronous and allocation-light on purpose: most requests that reach the origin are
        cache hits, and this is all they cost beyond the HTTP server.
        """
        target = self.shield.targets.get(raw_target)
        if target is None or (target.expires_at is not None and self.clock() >= target.expires_at):
            return None
        variant = negotiate.variant(target.options, accept) if target.options.f == "auto" else ""
        render = self.shield.renders.get((target.key, target.canonical, variant))
        if render is None or self.sources.is_stale(render.checked_at):
            return None
        self.metrics.tally_hit()
        return self._reply(target, render, if_none_match, if_modified_since, "hit")

    # -- the whole flow ------------------------------------------------------------------------
    async def handle(self, req: ImageRequest) -> Reply:
        hit = self.cached_reply(
            req.raw_target, req.accept, req.if_none_match, req.if_modified_since
        )
        if hit is not None:
            return hit
        target = self.resolve(req.raw_target)
        variant = negotiate.variant(target.options, req.accept)
        rkey: RenderKey = (target.key, target.canonical, variant)
        render = self.shield.renders.get(rkey)
        if render is not None:
            # Fresh renders of remembered URLs were answered above; this one is stale, or its
            # URL was not remembered (cache.targets = 0).
            cache = "hit"
            if self.sources.is_stale(render.checked_at):
                self.metrics.lookup("renders", "stale")
                self._refresh_later(target, variant, rkey, render)
                cache = "stale"
            else:
                self.metrics.tally_hit()
            return self._reply(target, render, req.if_none_match, req.if_modified_since, cache)
        self.metrics.lookup("renders", "miss")
        if req.if_none_match is not None:
            early = await self._conditional_without_render(target, variant, req)
            if early is not None:
                return early
        try:
            async with asyncio.timeout(self.deadline + DEADLINE_MARGIN):
                render, leader = await self.shield.flight.run(
                    rkey, lambda: self._produce(target, variant, rkey)
                )
        except TimeoutError:
            raise OriginTimeout("request deadline exceeded") from None
        if not leader:
            self.metrics.coalesced.labels("render").inc()
        cache = "miss" if leader else "coalesced"
        return self._reply(target, render, req.if_none_match, req.if_modified_since, cache)

    async def _conditional_without_render(
        self, target: Target, variant: str, req: ImageRequest
    ) -> Reply | None:
        """A revalidation with a cold render cache: compare ETags from the source's metadata."""
        meta = await self.sources.meta(target.key)
        tag = headers.etag(meta.etag, target.canonical, variant)
        if not headers.not_modified(
            if_none_match=req.if_none_match, if_modified_since=None, etag_value=tag,
            last_modified=meta.last_modified,
        ):  # fmt: skip
            return None
        modified = headers.http_date(meta.last_modified) if meta.last_modified else None
        out = self._headers(target, tag, modified, target.options.f == "auto")
        return Reply(304, out, cache="revalidated", key=target.key, canonical=target.canonical)

    async def _produce(self, target: Target, variant: str, rkey: RenderKey) -> Render:
        if self.results is not None:
            stored = await self._from_result_storage(target, variant, rkey)
            if stored is not None:
                return stored
        original = await self.sources.get(target.key)
        return await self._render(target, variant, rkey, original)

    async def _from_result_storage(
        self, target: Target, variant: str, rkey: RenderKey
    ) -> Render | None:
        assert self.results is not None
        meta = await self.sources.meta(target.key)
        key = self.results.key(target.key, meta.etag, target.canonical, variant)
        found = await self.results.get(key)
        if found is None:
            return None
        body, content_type = found
        render = self._make_render(
            target, variant, body, content_type, meta.etag, meta.last_modified
        )
        self.shield.renders.put(rkey, render)
        return render

    async def _render(
        self, target: Target, variant: str, rkey: RenderKey, original: Original
    ) -> Render:
        # One deadline for waiting and working; past it libvips is told to stop.
        cancel = transform.Cancel()
        try:
            rendered = await self.workers.run(
                self.deadline,
                transform.render,
                original.body,
                target.options,
                variant,
                self.tcfg,
                cancel,
            )
        except (Overloaded, asyncio.CancelledError):
            cancel.kill()
            raise
        self.metrics.transforms.labels(rendered.format).inc()
        meta = original.meta
        content_type = negotiate.CONTENT_TYPES[rendered.format]
        render = self._make_render(
            target, variant, rendered.body, content_type, meta.etag, meta.last_modified
        )
        self.shield.renders.put(rkey, render)
        if self.results is not None:
            key = self.results.key(target.key, meta.etag, target.canonical, variant)
            self.results.put_later(key, rendered.body, content_type)
        return render

    def _make_render(
        self,
        target: Target,
        variant: str,
        body: bytes,
        content_type: str,
        source_etag: str,
        modified: float | None,
    ) -> Render:
        return Render(
            body=body,
            content_type=content_type,
            etag=headers.etag(source_etag, target.canonical, variant),
            source_etag=source_etag,
            modified=modified,
            last_modified=headers.http_date(modified) if modified else None,
            vary=negotiate.vary_needed(target.options),
            checked_at=self.clock(),
        )

    def sample_gauges(self) -> None:
        """Point-in-time gauges (cache sizes, workers, libvips memory) and the request tally."""
        m = self.metrics
        m.flush()
        for layer, cache in (("renders", self.shield.renders), ("originals", self.sources.cache)):
            m.cache_bytes.labels(layer).set(cache.nbytes)
            m.cache_entries.labels(layer).set(len(cache))
        negative = self.sources.negative
        m.cache_entries.labels("negative").set(len(negative) if negative is not None else 0)
        m.transforms_in_flight.set(self.workers.running)
        m.queue_depth.set(self.workers.waiting)
        memory = libvips.tracked_memory()
        if memory is not None:
            m.libvips_memory.set(memory)

    # -- stale-while-revalidate for renders ----------------------------------------------------
    def _refresh_later(self, target: Target, variant: str, rkey: RenderKey, render: Render) -> None:
        if rkey in self.shield.refreshing:
            return
        self.shield.refreshing.add(rkey)
        self.background.spawn(self._refresh(target, variant, rkey, render), "render refresh")

    async def _refresh(self, target: Target, variant: str, rkey: RenderKey, render: Render) -> None:
        try:
            original = await self.sources.get(target.key)
            if original.meta.etag == render.source_etag:
                # Unchanged (or the origin is down and the cached original stands in).
                kept = dataclasses.replace(render, checked_at=original.checked_at)
                self.shield.renders.put(rkey, kept)
            else:
                await self._render(target, variant, rkey, original)
        except NotFound:
            self.shield.renders.pop(rkey)
        except ProxyError as exc:
            log.warning("render refresh failed: %s", exc.detail)
        finally:
            self.shield.refreshing.discard(rkey)

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

    def _reply(
        self,
        target: Target,
        render: Render,
        if_none_match: str | None,
        if_modified_since: str | None,
        cache: str,
    ) -> Reply:
        if (if_none_match is not None or if_modified_since is not None) and (
            headers.not_modified(
                if_none_match=if_none_match,
                if_modified_since=if_modified_since,
                etag_value=render.etag,
                last_modified=render.modified,
            )
        ):
            out = self._headers(target, render.etag, render.last_modified, render.vary)
            return Reply(304, out, cache=cache, key=target.key, canonical=target.canonical)
        prebuilt = target.prebuilt.get(render.etag) if target.expires_at is None else None
        if prebuilt is not None:
            out = prebuilt
        else:
            out = self._headers(target, render.etag, render.last_modified, render.vary)
            out["Content-Type"] = render.content_type
            if target.expires_at is None:
                target.prebuilt[render.etag] = out
        return Reply(200, out, render.body, cache, target.key, target.canonical)
