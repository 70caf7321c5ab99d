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

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger("originshield")
METRICS = web.AppKey("metrics", Metrics)
POLICY = web.AppKey("policy", headers.CachePolicy)
ACCESS_LOG = web.AppKey("access_log", bool)
ROUTES = frozenset({"healthz", "readyz", "metrics"})
REQUEST_ID = web.RequestKey("request_id", str)
CACHE_RESULT = web.RequestKey("cache_result", str)
OBJECT_KEY = web.RequestKey("object_key", str)
CANONICAL = web.RequestKey("canonical", str)
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
    """Outermost: request id, metrics and the access log see the final status."""
    request_id = secrets.token_hex(8)
    request[REQUEST_ID] = request_id
    stages = timing.begin()
    started = time.perf_counter()
    response = await handler(request)
    elapsed = time.perf_counter() - started
    response.headers["X-Request-Id"] = request_id
    # No framework or Python version in the Server header.
    response.headers["Server"] = "originshield"
    metrics = request.app[METRICS]
    route = _route(request)
    metrics.requests.labels(route, f"{response.status // 100}xx").inc()
    metrics.request_seconds.labels(route).observe(elapsed)
    body_length = response.content_length or 0
    metrics.served_bytes.inc(body_length)
    if request.app[ACCESS_LOG] and route == "image":
        ACCESS.info(
            "request",
            extra={
                "fields": {
                    "request_id": request_id,
                    "cf_ray": request.headers.get("CF-Ray"),
                    "client_ip": _client_ip(request),
                    "method": request.method,
                    "key": request.get(OBJECT_KEY),
                    "options": request.get(CANONICAL),
                    "status": response.status,
                    "bytes": body_length,
                    "cache": request.get(CACHE_RESULT),
                    "duration_ms": round(elapsed * 1000, 3),
                    "stages": stages,
                    "user_agent": request.headers.get("User-Agent"),
                }
            },
        )
    return response


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The only place an exception becomes a response; nothing internal reaches the client."""
    try:
        return await handler(request)
    except ProxyError as err:
        metrics = request.app[METRICS]
        metrics.errors.labels(err.category).inc()
        reason = REJECTIONS.get(err.category)
        if reason is not None:
            metrics.rejections.labels(reason).inc()
        if err.status >= 500 or err.detail != err.public:
            log.warning(
                "%s", err.public,
                extra={"fields": {"request_id": request[REQUEST_ID], "detail": err.detail,
                                  "status": err.status}},
            )  # fmt: skip
        return _error_response(request, err)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return web.Response(
            status=exc.status,
            text=(exc.reason or "error") + "\n",
            headers={"Cache-Control": headers.NO_STORE, **_allow(exc)},
        )
    except Exception:
        request.app[METRICS].errors.labels("internal").inc()
        log.exception("unhandled error", extra={"fields": {"request_id": request[REQUEST_ID]}})
        return web.Response(
            status=500, text="internal error\n", headers={"Cache-Control": headers.NO_STORE}
        )


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Checks before the image route: URL length, then the origin lock (probes are exempt)."""
    if _route(request) != "image":
        return await handler(request)
    if len(request.raw_path) > request.app[MAX_URL]:
        raise UriTooLong("URL too long")
    lock = request.app.get(LOCK)
    if lock is not None:
        if not lock.admits(request.remote, request.headers.get(lock.header or "")):
            raise Locked("forbidden")
        trusted = OriginLock.client_ip(request.headers.get("CF-Connecting-IP"), request.remote)
        if trusted is not None:
            request[TRUSTED_IP] = trusted
    return await handler(request)


def _allow(exc: web.HTTPException) -> dict[str, str]:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else {}
