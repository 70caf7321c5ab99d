"""A counting, fault-injecting HTTP proxy in front of the S3-protocol test server.

It counts S3 operations (GetObject, HeadObject, ...) so tests can assert how often the bucket
was asked, and it can delay, answer 503 SlowDown, or stop listening altogether.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import aiohttp
from aiohttp import web

_HOP = {"transfer-encoding", "connection", "keep-alive", "content-length", "content-encoding"}
SLOWDOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


def operation(method: str, path: str, query: str) -> str:
    parts = path.lstrip("/").split("/", 1)
    has_key = len(parts) == 2 and parts[1] != ""
    if method == "GET":
        return "GetObject" if has_key else "ListObjects"
    if method == "HEAD":
        return "HeadObject" if has_key else "HeadBucket"
    if method == "PUT":
        return "PutObject" if has_key else "CreateBucket"
    return method


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.counts: Counter[str] = Counter()
        self.delay = 0.0
        self.busy_answers = 0  # the next N requests get 503 SlowDown
        self.retry_after: str | None = None
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=False)

    async def stop(self) -> None:
        """Stop listening (the port stays ours for a restart)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def close(self) -> None:
        await self.stop()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        op = operation(request.method, request.path, request.query_string)
        self.counts[op] += 1
        if request.headers.get("If-None-Match"):
            self.counts[f"{op}:conditional"] += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.busy_answers > 0:
            self.busy_answers -= 1
            self.counts["busy"] += 1
            headers = {"Content-Type": "application/xml"}
            if self.retry_after is not None:
                headers["Retry-After"] = self.retry_after
            return web.Response(status=503, body=SLOWDOWN, headers=headers)
        assert self._session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with self._session.request(
            request.method,
            self.upstream + request.raw_path,
            headers=headers,
            data=body or None,
            allow_redirects=False,
        ) as upstream:
            payload = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP}
            if request.method == "HEAD":
                out["Content-Length"] = upstream.headers.get("Content-Length", "0")
                return web.Response(status=upstream.status, headers=out)
            return web.Response(status=upstream.status, headers=out, body=payload)
