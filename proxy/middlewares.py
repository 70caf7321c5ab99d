"""Request id, timing and access log, and the one place errors become responses."""

from __future__ import annotations

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
from proxy.service import Reply

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger("originshield")
METRICS = web.AppKey("metrics", Metrics)
POLICY = web.AppKey("policy", headers.CachePolicy)
ACCESS_LOG = web.AppKey("access_log", bool)
ROUTES = frozenset({"healthz", "readyz", "metrics"})
REQUEST_ID = web.RequestKey("request_id", str)
REPLY = web.RequestKey("reply", Reply)
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


def _client_ip(request: web.Request) -> str | None:
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

    One layer rather than three: on a cache hit this wrapper is most of what is not aiohttp.
    """
    request_id = secrets.token_hex(8)
    request[REQUEST_ID] = request_id
    stages = timing.begin()
    started = time.perf_counter()
    try:
        response = await handler(request)
    except Exception as exc:
        response = _failure(request, exc)
    elapsed = time.perf_counter() - started
    headers_out = response.headers
    headers_out["X-Request-Id"] = request_id
    # No framework or Python version in the Server header.
    headers_out["Server"] = "originshield"
    app = request.app
    route = _route(request)
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
