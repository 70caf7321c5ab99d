"""Backblaze B2 (or any S3-protocol server) through aiobotocore.

One client for the app's lifetime. B2 specifics: SigV4 with the region taken from the endpoint,
path-style addressing, and no default integrity-checksum headers (botocore >= 1.36 sends
``x-amz-checksum-mode: ENABLED`` on every GetObject, which B2 has rejected).

Retries are done here rather than by botocore, so that B2's ``Retry-After`` on a 503 ``SlowDown``
is honoured (bounded) and each retry is counted: busy answers (500/502/503/504, ``SlowDown``),
connection failures and socket timeouts are retried with exponential backoff and full jitter.
The whole call, retries included, is bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from proxy.errors import NotFound, OriginError, OriginTimeout, ProxyError, SourceTooLarge
from proxy.origin import SourceMeta, SourceObject

log = logging.getLogger("originshield.origin")
T = TypeVar("T")
_CHUNK = 256 * 1024
# A missing bucket is a configuration error (502, logged), not a missing image.
_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})
_RETRY_CODES = frozenset(
    {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "TooManyRequests"}
)
_RETRY_STATUS = frozenset({500, 502, 503, 504})
BACKOFF_BASE = 0.1
BACKOFF_CAP = 2.0
MAX_RETRY_AFTER = 5.0


class _NotModified(Exception):
    pass


def _retry_after(exc: ClientError) -> float | None:
    headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    value = headers.get("retry-after")
    try:
        return min(MAX_RETRY_AFTER, max(0.0, float(value))) if value is not None else None
    except ValueError:
        return None


class S3Origin:
    def __init__(
        self,
        *,
        endpoint_url: str,
        region: str,
        bucket: str,
        access_key_id: str | None,
        secret_access_key: str | None,
        connect_timeout: float,
        read_timeout: float,
        retries: int,
        max_object_bytes: int,
        max_connections: int = 64,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self.bucket = bucket
        self.max_object_bytes = max_object_bytes
        self.retries = retries
        self._on_retry = on_retry
        # Every attempt may use its full socket timeouts, and every wait its longest backoff.
        self._budget = (connect_timeout + read_timeout) * (retries + 1) + MAX_RETRY_AFTER * retries
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        self._config = AioConfig(
            region_name=region,
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "standard", "total_max_attempts": 1},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            max_pool_connections=max_connections,
        )
        self._client_args: dict[str, Any] = {
            "endpoint_url": endpoint_url,
            "region_name": region,
            "aws_access_key_id": access_key_id,
            "aws_secret_access_key": secret_access_key,
        }

    async def start(self) -> None:
        session = get_session()
        self._client = await self._stack.enter_async_context(
            session.create_client("s3", config=self._config, **self._client_args)
        )

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None

    async def _call(
        self, action: str, key: str, op: Callable[[], Awaitable[T]], *, retries: int | None = None
    ) -> T:
        retries = self.retries if retries is None else retries
        attempt = 0
        try:
            async with asyncio.timeout(self._budget):
                while True:
                    delay: float | None = None
                    try:
                        return await op()
                    except ClientError as exc:
                        code = str(exc.response.get("Error", {}).get("Code", ""))
                        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                        if code in _NOT_FOUND:
                            raise NotFound("not found") from None
                        if code == "304":
                            raise _NotModified from None
                        error: ProxyError = OriginError(
                            "origin error", detail=f"{action} {key!r}: {code or status}: {exc}"
                        )
                        retry = status in _RETRY_STATUS or code in _RETRY_CODES
                        delay = _retry_after(exc)
                    except (ConnectTimeoutError, ReadTimeoutError) as exc:
                        error = OriginTimeout("origin timeout", detail=f"{action} {key!r}: {exc}")
                        retry = True
                    except (
                        EndpointConnectionError,
                        ConnectionClosedError,
                        aiohttp.ClientError,
                        OSError,
                    ) as exc:
                        error = OriginError("origin unreachable", detail=f"{action} {key!r}: {exc}")
                        retry = True
                    except BotoCoreError as exc:
                        error = OriginError("origin error", detail=f"{action} {key!r}: {exc}")
                        retry = False
                    if not retry or attempt >= retries:
                        raise error
                    attempt += 1
                    if delay is None:
                        delay = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))  # noqa: S311
                    if self._on_retry is not None:
                        self._on_retry(action)
                    log.info("retrying %s in %.2fs (attempt %d)", action, delay, attempt + 1)
                    await asyncio.sleep(delay)
        except TimeoutError:
            raise OriginTimeout("origin timeout", detail=f"{action} {key!r}: deadline") from None

    async def fetch(self, key: str, *, if_none_match: str | None = None) -> SourceObject | None:
        async def get() -> SourceObject:
            extra = {"IfNoneMatch": if_none_match} if if_none_match else {}
            resp = await self._client.get_object(Bucket=self.bucket, Key=key, **extra)
            async with resp["Body"] as stream:
                declared = int(resp.get("ContentLength") or 0)
                if declared > self.max_object_bytes:
                    raise SourceTooLarge("source object is too large")
                chunks: list[bytes] = []
                total = 0
                while chunk := await stream.read(_CHUNK):
                    total += len(chunk)
                    # The declared length may lie; stop reading as soon as the cap is passed.
                    if total > self.max_object_bytes:
                        raise SourceTooLarge("source object is too large")
                    chunks.append(chunk)
            return SourceObject(b"".join(chunks), _meta(resp, total))

        try:
            return await self._call("GetObject", key, get)
        except _NotModified:
            return None

    async def stat(self, key: str) -> SourceMeta:
        async def head() -> SourceMeta:
            resp = await self._client.head_object(Bucket=self.bucket, Key=key)
            return _meta(resp, int(resp.get("ContentLength") or 0))

        return await self._call("HeadObject", key, head)

    async def put(self, key: str, body: bytes, content_type: str) -> None:
        async def put_object() -> None:
            await self._client.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType=content_type
            )

        await self._call("PutObject", key, put_object)

    async def ping(self) -> None:
        async def head_bucket() -> None:
            await self._client.head_bucket(Bucket=self.bucket)

        # A readiness probe wants the current state, not a retried one.
        await self._call("HeadBucket", "", head_bucket, retries=0)


def _meta(resp: dict[str, Any], size: int) -> SourceMeta:
    modified = resp.get("LastModified")
    return SourceMeta(
        etag=str(resp.get("ETag") or ""),
        last_modified=modified.timestamp() if modified is not None else None,
        size=size,
        content_type=str(resp.get("ContentType") or ""),
    )
