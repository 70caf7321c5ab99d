"""The thin aiohttp shell: turn a request into a ``service`` call and back."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence

import prometheus_client
from aiohttp import web

from proxy import middlewares
from proxy.errors import MethodNotAllowed
from proxy.originlock import Network
from proxy.readiness import Readiness
from proxy.service import ImageRequest

SERVICE = middlewares.SERVICE_KEY
READINESS = web.AppKey("readiness", Readiness)
EXPOSITION: web.AppKey[Callable[[], bytes]] = web.AppKey("exposition")
METRICS_NETWORKS = web.AppKey("metrics_networks", list[Network])
MAIN_APP = web.AppKey("main_app", web.Application)


async def image(request: web.Request) -> web.StreamResponse:
    if request.method not in ("GET", "HEAD"):
        raise MethodNotAllowed("method not allowed")
    middlewares.guard(request)
    h = request.headers
    reply = await request.app[SERVICE].handle(
        ImageRequest(
            raw_target=request.raw_path,
            accept=h.get("Accept"),
            if_none_match=h.get("If-None-Match"),
            if_modified_since=h.get("If-Modified-Since"),
        )
    )
    request[middlewares.REPLY] = reply
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
    main = request.app.get(MAIN_APP, request.app)
    networks = main[METRICS_NETWORKS]
    if networks and not _in_networks(request.remote, networks):
        raise web.HTTPForbidden(reason="forbidden")
    main[SERVICE].sample_gauges()
    return web.Response(
        body=main[EXPOSITION](),
        headers={
            "Content-Type": prometheus_client.CONTENT_TYPE_LATEST,
            "Cache-Control": "no-store",
        },
    )


def _in_networks(peer: str | None, networks: Sequence[Network]) -> bool:
    try:
        addr = ipaddress.ip_address(peer or "")
    except ValueError:
        return False
    return any(addr in net for net in networks)


def add_routes(app: web.Application, *, with_metrics: bool) -> None:
    app.router.add_get("/healthz", healthz, name="healthz")
    app.router.add_get("/readyz", readyz, name="readyz")
    if with_metrics:
        app.router.add_get("/metrics", metrics, name="metrics")
    app.router.add_route("*", "/{key:.*}", image, name="image")


def metrics_app(main: web.Application) -> web.Application:
    """/metrics alone, for ``metrics.port``."""
    app = web.Application()
    app[MAIN_APP] = main
    app.router.add_get("/metrics", metrics, name="metrics")
    return app
