"""The thin aiohttp shell: turn a request into a ``service`` call and back."""

from __future__ import annotations

import prometheus_client
from aiohttp import web

from proxy import middlewares
from proxy.errors import MethodNotAllowed
from proxy.metrics import Metrics
from proxy.readiness import Readiness
from proxy.service import ImageRequest, Service

SERVICE = web.AppKey("service", Service)
READINESS = web.AppKey("readiness", Readiness)
REGISTRY_METRICS = web.AppKey("registry_metrics", Metrics)


async def image(request: web.Request) -> web.StreamResponse:
    if request.method not in ("GET", "HEAD"):
        raise MethodNotAllowed("method not allowed")
    service = request.app[SERVICE]
    h = request.headers
    reply = await service.handle(
        ImageRequest(
            raw_target=request.raw_path,
            accept=h.get("Accept"),
            if_none_match=h.get("If-None-Match"),
            if_modified_since=h.get("If-Modified-Since"),
        )
    )
    request[middlewares.CACHE_RESULT] = reply.cache
    request[middlewares.OBJECT_KEY] = reply.key
    request[middlewares.CANONICAL] = reply.canonical
    return web.Response(status=reply.status, body=reply.body or None, headers=reply.headers)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n", headers={"Cache-Control": "no-store"})


async def readyz(request: web.Request) -> web.Response:
    problem = await request.app[READINESS].problem()
    if problem is not None:
        return web.Response(
            status=503, text=f"not ready: {problem}\n", headers={"Cache-Control": "no-store"}
        )
    return web.Response(text="ready\n", headers={"Cache-Control": "no-store"})


async def metrics(request: web.Request) -> web.Response:
    m = request.app[REGISTRY_METRICS]
    service = request.app[SERVICE]
    for layer, cache in (("renders", service.shield.renders), ("originals", service.sources.cache)):
        m.cache_bytes.labels(layer).set(cache.nbytes)
        m.cache_entries.labels(layer).set(len(cache))
    m.transforms_in_flight.set(service.workers.running)
    m.queue_depth.set(service.workers.waiting)
    body = prometheus_client.generate_latest(m.registry)
    return web.Response(
        body=body,
        headers={
            "Content-Type": prometheus_client.CONTENT_TYPE_LATEST,
            "Cache-Control": "no-store",
        },
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz, name="healthz")
    app.router.add_get("/readyz", readyz, name="readyz")
    app.router.add_get("/metrics", metrics, name="metrics")
    app.router.add_route("*", "/{key:.*}", image, name="image")
