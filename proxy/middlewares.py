"""Request id, timing and access log, and the one place errors become responses."""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from proxy import headers, timing
from proxy.errors import Locked, Overloaded, ProxyError, UriTooLong
from proxy.logs import ACCESS
from proxy.metrics import Metrics
from proxy.originlock import OriginLock
from proxy.service import Reply, Service

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger("originshield")
METRICS = web.AppKey("metrics", Metrics)
POLICY = web.AppKey("policy", headers.CachePolicy)
ACCESS_LOG = web.AppKey("access_log", bool)
ROUTES = frozenset({"healthz", "readyz", "metrics"})
REQUEST_ID = web.RequestKey("request_id", str)
REPLY = web.RequestKey("reply", Reply)
SERVICE_KEY = web.AppKey("service", Service)
TRUSTED_IP = web.RequestKey("trusted_client_ip", str)
LOCK = web.AppKey("origin_lock", OriginLock)
MAX_URL = web.AppKey("max_url_length", int)
# Error categories counted as rejections, and the reason label each one gets.
REJECTIONS = {
    "signature": "signature",
    "params": "params",
    "limits": "limits",
    "overload": "overload",
    "timeout": "overload",
    "origin_lock": "origin_lock",
}


def _route(request: web.Request) -> str:
    name = request.match_info.route.name
    return name if name in ROUTES else "image"


def _client_ip(request: web.BaseRequest) -> str | None:
    trusted: str | None = request.get(TRUSTED_IP)
    return trusted or request.remote


def _error_response(request: web.Request, err: ProxyError) -> web.Response:
    policy = request.app[POLICY]
    browser, edge = headers.error_cache_control(err.status, policy)
    out = {"Cache-Control": browser}
    if edge:
        out[headers.CDN_CACHE_CONTROL] = edge
    if isinstance(err, Overloaded):
        out["Retry-After"] = str(err.retry_after)
    return web.Response(status=err.status, text=err.public + "\n", headers=out)


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The only middleware: request id, timing, metrics, access log, and the one place an
    exception becomes a response (nothing internal reaches the client).

    Cache hits of a running server are answered earlier, by ``fast_lane``.
    """
    started = time.perf_counter()
    request_id = f"{_ID_PREFIX}{next(_IDS):x}"
    request[REQUEST_ID] = request_id
    stages = timing.begin()
    try:
        response = await handler(request)
    except Exception as exc:  # every failure is answered, never propagated
        response = _failure(request, exc)
    return _finish(request, request.app, response, _route(request), request_id, started, stages)


RawHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def fast_lane(app: web.Application, inner: RawHandler) -> RawHandler:
    """Wraps the HTTP server's request handler (of a started app) so that a fresh render of a
    URL verified before is answered before aiohttp resolves the route and builds the
    middleware chain: on a hit that is most of the cost. Everything else goes to ``inner``.

    With the origin lock on, every request takes the full path through the lock check.
    """
    if app.get(LOCK) is not None:
        return inner
    service = app[SERVICE_KEY]

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        if request.method in _FAST_METHODS:
            started = time.perf_counter()
            h = request.headers
            reply = service.cached_reply(
                request.raw_path, h.get("Accept"), h.get("If-None-Match"),
                h.get("If-Modified-Since"),
            )  # fmt: skip
            if reply is not None:
                request_id = f"{_ID_PREFIX}{next(_IDS):x}"
                request[REQUEST_ID] = request_id
                request[REPLY] = reply
                response = web.Response(
                    status=reply.status, body=reply.body or None, headers=reply.headers
                )
                return _finish(request, app, response, "image", request_id, started, {})
        return await inner(request)

    return handle


def _finish(
    request: web.BaseRequest,
    app: web.Application,
    response: web.StreamResponse,
    route: str,
    request_id: str,
    started: float,
    stages: dict[str, float],
) -> web.StreamResponse:
    """Request id header, metrics and the access log, for every answer."""
    elapsed = time.perf_counter() - started
    out = response.headers
    out["X-Request-Id"] = request_id
    # No framework or Python version in the Server header.
    out["Server"] = "originshield"
    body_length = response.content_length or 0
    app[METRICS].count_request(route, response.status, elapsed, body_length)
    if app[ACCESS_LOG] and route == "image":
        reply = request.get(REPLY)
        ACCESS.info(
            "request",
            extra={
                "fields": {
                    "request_id": request_id,
                    "cf_ray": request.headers.get("CF-Ray"),
                    "client_ip": _client_ip(request),
                    "method": request.method,
                    "key": reply.key if reply is not None else None,
                    "options": reply.canonical if reply is not None else None,
                    "status": response.status,
                    "bytes": body_length,
                    "cache": reply.cache if reply is not None else None,
                    "duration_ms": round(elapsed * 1000, 3),
                    "stages": stages,
                    "user_agent": request.headers.get("User-Agent"),
                }
            },
        )
    return response


# Unique enough across processes and restarts to find a request in the logs, and far cheaper
# than a random token per request.
_ID_PREFIX = f"{secrets.token_hex(4)}-"
_IDS = itertools.count(1)
_FAST_METHODS = frozenset({"GET", "HEAD"})


def _failure(request: web.Request, exc: Exception) -> web.StreamResponse:
    metrics = request.app[METRICS]
    if isinstance(exc, ProxyError):
        metrics.errors.labels(exc.category).inc()
        reason = REJECTIONS.get(exc.category)
        if reason is not None:
            metrics.rejections.labels(reason).inc()
        if exc.status >= 500 or exc.detail != exc.public:
            log.warning(
                "%s", exc.public,
                extra={"fields": {"request_id": request[REQUEST_ID], "detail": exc.detail,
                                  "status": exc.status}},
            )  # fmt: skip
        return _error_response(request, exc)
    if isinstance(exc, web.HTTPException) and exc.status >= 400:
        return web.Response(
            status=exc.status,
            text=(exc.reason or "error") + "\n",
            headers={"Cache-Control": headers.NO_STORE, **_allow(exc)},
        )
    if isinstance(exc, web.HTTPException):
        return exc  # redirects and the like are responses already
    metrics.errors.labels("internal").inc()
    log.error(
        "unhandled error",
        exc_info=exc,
        extra={"fields": {"request_id": request[REQUEST_ID]}},
    )
    return web.Response(
        status=500, text="internal error\n", headers={"Cache-Control": headers.NO_STORE}
    )


def guard(request: web.Request) -> None:
    """Checks before the image route: URL length, then the origin lock."""
    if len(request.raw_path) > request.app[MAX_URL]:
        raise UriTooLong("URL too long")
    lock = request.app.get(LOCK)
    if lock is not None:
        if not lock.admits(request.remote, request.headers.get(lock.header or "")):
            raise Locked("forbidden")
        trusted = OriginLock.client_ip(request.headers.get("CF-Connecting-IP"), request.remote)
        if trusted is not None:
            request[TRUSTED_IP] = trusted


def _allow(exc: web.HTTPException) -> dict[str, str]:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else {}
