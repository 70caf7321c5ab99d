"""Composition root: settings in, a ready ``web.Application`` out.

Nothing is built at import time: the origin client, the executor, the caches and the metrics
registry are created in ``cleanup_ctx`` and closed there.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable, Coroutine
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from aiohttp import web
from cachetools import LRUCache, TTLCache
from prometheus_client import CollectorRegistry, generate_latest, multiprocess

from proxy import handlers, headers, libvips, middlewares, options, timing, transform
from proxy.cache import ByteLRU
from proxy.metrics import Metrics
from proxy.origin import Origin
from proxy.origin.local import LocalOrigin
from proxy.origin.s3 import S3Origin
from proxy.originlock import OriginLock, parse_networks
from proxy.readiness import Readiness
from proxy.results import ResultStorage
from proxy.service import Service
from proxy.settings import Settings, region_from_endpoint
from proxy.shield import Shield
from proxy.signing import Verifier
from proxy.sources import Sources
from proxy.tasks import Background
from proxy.workers import Workers

SETTINGS = web.AppKey("settings", Settings)
log = logging.getLogger("originshield")


def _secret(value: object) -> str | None:
    get = getattr(value, "get_secret_value", None)
    return str(get()) if get is not None else None


async def build_origin(settings: Settings, metrics: Metrics) -> Origin:
    o = settings.origin
    if o.kind == "local":
        return LocalOrigin(o.root, max_object_bytes=o.max_object_bytes)
    s3 = S3Origin(
        endpoint_url=o.endpoint_url,
        region=o.region or region_from_endpoint(o.endpoint_url),
        bucket=o.bucket,
        access_key_id=_secret(o.access_key_id),
        secret_access_key=_secret(o.secret_access_key),
        connect_timeout=o.connect_timeout,
        read_timeout=o.read_timeout,
        retries=o.retries,
        max_object_bytes=o.max_object_bytes,
        max_connections=o.max_connections,
        on_retry=lambda action: metrics.origin_retries.labels(action).inc(),
    )
    await s3.start()
    return s3


def limits_from(settings: Settings) -> options.Limits:
    t = settings.transform
    limits = options.Limits(
        max_width=t.max_width,
        max_height=t.max_height,
        max_pixels=t.max_output_pixels,
        allowed_widths=options.allowed_widths(t.allowed_widths),
        width_policy=t.width_policy,
        presets=options.preset_table(settings.presets),
        presets_only=t.presets_only,
    )
    options.validate_presets(limits.presets, limits)
    return limits


def transform_config_from(settings: Settings) -> transform.TransformConfig:
    t = settings.transform
    return transform.TransformConfig(
        source_formats=frozenset(t.source_formats),
        max_source_pixels=t.max_source_pixels,
        max_frames=t.max_frames,
        max_animation_pixels=t.max_animation_pixels,
        max_width=t.max_width,
        max_height=t.max_height,
        max_output_pixels=t.max_output_pixels,
        fail_on=t.fail_on,
        quality_jpeg=t.quality_jpeg,
        quality_webp=t.quality_webp,
        quality_avif=t.quality_avif,
        effort_webp=t.effort_webp,
        effort_avif=t.effort_avif,
        effort_png=t.effort_png,
    )


def policy_from(settings: Settings) -> headers.CachePolicy:
    c = settings.cache_control
    return headers.CachePolicy(
        browser_ttl=c.browser_ttl,
        edge_ttl=c.edge_ttl,
        stale_while_revalidate=c.stale_while_revalidate,
        stale_if_error=c.stale_if_error,
        versioned_ttl=c.versioned_ttl,
        not_found_ttl=c.not_found_ttl,
    )


def _package_version() -> str:
    try:
        return version("originshield")
    except PackageNotFoundError:  # running from a source tree
        return "0+unknown"


def _exposition(metrics: Metrics, multiprocess_dir: str | None) -> Callable[[], bytes]:
    if multiprocess_dir is None:
        return lambda: generate_latest(metrics.registry)

    def collect_all() -> bytes:
        # Every process writes its values to files in the shared folder; read them all.
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    return collect_all


def create_app(
    settings: Settings,
    *,
    registry: CollectorRegistry | None = None,
    multiprocess_dir: str | None = None,
) -> web.Application:
    app = web.Application(
        middlewares=[middlewares.observe],
        handler_args={
            # The URL limit itself is enforced by the guard middleware with a clean 414.
            "max_line_size": max(8190, settings.server.max_url_length + 1024),
            "max_field_size": settings.server.max_field_size,
        },
    )
    app[SETTINGS] = settings
    policy = policy_from(settings)
    app[middlewares.POLICY] = policy
    app[middlewares.ACCESS_LOG] = settings.log.access
    app[middlewares.MAX_URL] = settings.server.max_url_length
    lock = settings.origin_lock
    if lock.enabled:
        app[middlewares.LOCK] = OriginLock(
            header=lock.header,
            secrets=[s.get_secret_value() for s in lock.secrets],
            networks=parse_networks(lock.cloudflare_ranges) if lock.cloudflare_ips_only else None,
        )
    metrics = Metrics(registry if registry is not None else CollectorRegistry())
    metrics.build.labels(_package_version(), libvips.version()).set(1)
    app[middlewares.METRICS] = metrics
    app[handlers.EXPOSITION] = _exposition(metrics, multiprocess_dir)
    app[handlers.METRICS_NETWORKS] = parse_networks(settings.metrics.allowed_networks)
    limits = limits_from(settings)
    tcfg = transform_config_from(settings)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        libvips.configure(
            svg_enabled="svg" in settings.transform.source_formats,
            threads=settings.transform.vips_threads,
        )
        origin = await build_origin(settings, metrics)

        def observe(stage: str, seconds: float) -> None:
            metrics.stage(stage, seconds)
            timing.record(stage, seconds)

        workers = Workers(settings.transform.concurrency, settings.transform.queue, observe)
        background = Background()
        c = settings.cache
        sources = Sources(
            origin,
            cache=ByteLRU(c.originals_bytes),
            negative=TTLCache(maxsize=65536, ttl=c.negative_ttl) if c.negative_ttl else None,
            revalidate_after=c.revalidate_after,
            metrics=metrics,
        )
        rs = settings.result_storage
        results = (
            ResultStorage(origin, prefix=rs.prefix, metrics=metrics, background=background)
            if rs.enabled
            else None
        )
        shield = Shield(renders=ByteLRU(c.renders_bytes), targets=LRUCache(maxsize=c.targets))
        app[handlers.SERVICE] = Service(
            verifier=Verifier(
                settings.signing_keys(),
                ttl=settings.signing.ttl,
                required=settings.signing.required,
                max_skew=settings.signing.max_clock_skew,
            ),
            limits=limits,
            transform_config=tcfg,
            policy=policy,
            sources=sources,
            workers=workers,
            shield=shield,
            metrics=metrics,
            deadline=settings.transform.timeout,
            background=background,
            results=results,
            allowed_prefixes=tuple(settings.origin.allowed_prefixes),
        )
        app[handlers.READINESS] = Readiness(origin, workers)
        service = app[handlers.SERVICE]
        sampler = asyncio.ensure_future(_sample(service)) if multiprocess_dir else None
        try:
            yield
        finally:
            if sampler is not None:
                sampler.cancel()
            # Pending result-storage writes get a moment; then the client goes.
            await background.drain(grace=5.0)
            await origin.close()
            workers.close()

    app.cleanup_ctx.append(lifecycle)
    m = settings.metrics
    handlers.add_routes(app, with_metrics=m.enabled and not m.port)
    return app


SAMPLE_EVERY = 2.0


async def _sample(service: Service) -> None:
    """Keep this process's gauges current for scrapes answered by its siblings."""
    while True:
        service.sample_gauges()
        await asyncio.sleep(SAMPLE_EVERY)


async def serve(
    settings: Settings,
    host: str,
    port: int,
    *,
    reuse_port: bool = False,
    multiprocess_dir: str | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT, then drain: ``/readyz`` answers 503 at once, the listener
    closes, in-flight requests get ``server.shutdown_grace`` seconds, then everything closes."""
    app = create_app(settings, multiprocess_dir=multiprocess_dir)
    runner = web.AppRunner(
        app,
        access_log=None,
        keepalive_timeout=settings.server.keepalive_timeout,
        shutdown_timeout=settings.server.shutdown_grace,
        handle_signals=False,
    )
    await runner.setup()
    # Cache hits are answered before routing; set before the first connection is accepted.
    assert runner.server is not None
    runner.server.request_handler = middlewares.fast_lane(app, runner.server.request_handler)
    site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None, backlog=1024)
    await site.start()
    log.info("listening on %s:%d", host, port)
    metrics_runner = None
    if settings.metrics.enabled and settings.metrics.port:
        metrics_runner = web.AppRunner(handlers.metrics_app(app), access_log=None)
        await metrics_runner.setup()
        metrics_site = web.TCPSite(
            metrics_runner, host, settings.metrics.port, reuse_port=reuse_port or None
        )
        await metrics_site.start()
        log.info("metrics on %s:%d", host, settings.metrics.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    app[handlers.READINESS].draining = True
    if settings.server.drain_delay:
        log.info("draining: /readyz is 503, serving %.0fs more", settings.server.drain_delay)
        await asyncio.sleep(settings.server.drain_delay)
    log.info("draining: finishing in-flight requests")
    await runner.cleanup()
    if metrics_runner is not None:
        await metrics_runner.cleanup()
    log.info("stopped")


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run ``serve(...)`` to its end on uvloop (imported here: only a serving process needs it)."""
    import uvloop

    uvloop.run(main)
