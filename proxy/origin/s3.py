"""Backblaze B2 (or any S3-protocol server) through aiobotocore.

One client for the app's lifetime. B2 specifics: SigV4 with the region taken from the endpoint,
path-style addressing, and no default integrity-checksum headers (botocore >= 1.36 sends
``x-amz-checksum-mode: ENABLED`` on every GetObject, which B2 has rejected). Busy answers
(500/503 ``SlowDown``) are retried by botocore's ``standard`` mode with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    ReadTimeoutError,
)

from proxy.errors import NotFound, OriginError, OriginTimeout, SourceTooLarge
from proxy.origin import SourceMeta, SourceObject

log = logging.getLogger("originshield.origin")
_CHUNK = 256 * 1024
_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound", "NoSuchBucket"})


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
    ) -> None:
        self.bucket = bucket
        self.max_object_bytes = max_object_bytes
        self._timeout = connect_timeout + read_timeout
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        self._config = AioConfig(
            region_name=region,
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "standard", "total_max_attempts": retries + 1},
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
        self._attempts = retries + 1

    async def start(self) -> None:
        session = get_session()
        self._client = await self._stack.enter_async_context(
            session.create_client("s3", config=self._config, **self._client_args)
        )

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None

    @contextlib.asynccontextmanager
    async def _errors(self, key: str, action: str) -> Any:
        try:
            # botocore's own timeouts are per socket operation; this bounds the whole call
            # including its retries.
            async with asyncio.timeout(self._timeout * self._attempts + 1):
                yield
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _NOT_FOUND:
                raise NotFound("not found") from None
            raise OriginError(
                "origin error", detail=f"{action} {key!r}: {code or 'error'}: {exc}"
            ) from None
        except (ConnectTimeoutError, ReadTimeoutError, TimeoutError) as exc:
            raise OriginTimeout("origin timeout", detail=f"{action} {key!r}: {exc!r}") from None
        except (BotoCoreError, aiohttp.ClientError, OSError) as exc:
            raise OriginError("origin unreachable", detail=f"{action} {key!r}: {exc!r}") from None

    async def fetch(self, key: str) -> SourceObject:
        async with self._errors(key, "GetObject"):
            resp = await self._client.get_object(Bucket=self.bucket, Key=key)
            declared = int(resp.get("ContentLength") or 0)
            if declared > self.max_object_bytes:
                resp["Body"].close()
                raise SourceTooLarge("source object is too large")
            chunks: list[bytes] = []
            total = 0
            async with resp["Body"] as stream:
                while chunk := await stream.read(_CHUNK):
                    total += len(chunk)
                    # The declared length may lie; stop reading as soon as the cap is passed.
                    if total > self.max_object_bytes:
                        raise SourceTooLarge("source object is too large")
                    chunks.append(chunk)
            meta = _meta(resp, total)
        return SourceObject(b"".join(chunks), meta)

    async def stat(self, key: str) -> SourceMeta:
        async with self._errors(key, "HeadObject"):
            resp = await self._client.head_object(Bucket=self.bucket, Key=key)
            return _meta(resp, int(resp.get("ContentLength") or 0))
        raise AssertionError("unreachable")  # pragma: no cover

    async def ping(self) -> None:
        async with self._errors("", "HeadBucket"):
            await self._client.head_bucket(Bucket=self.bucket)


def _meta(resp: dict[str, Any], size: int) -> SourceMeta:
    modified = resp.get("LastModified")
    return SourceMeta(
        etag=str(resp.get("ETag") or ""),
        last_modified=modified.timestamp() if modified is not None else None,
        size=size,
    )
