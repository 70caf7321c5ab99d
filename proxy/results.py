"""Result storage: rendered variants kept in the bucket, shared by replicas and restarts.

A variant's key names the source object, so all variants of one original sit under one prefix
(``<prefix><object key>/<digest>``), and the digest covers the source's ETag, so a changed
original never meets an old render. Reads happen before transforming; writes happen after the
response and never fail a request.
"""

from __future__ import annotations

import base64
import hashlib
import logging

from proxy.errors import NotFound, OriginError, ProxyError
from proxy.metrics import Metrics
from proxy.origin import Origin
from proxy.tasks import Background

log = logging.getLogger("originshield.results")


class ResultStorage:
    def __init__(
        self, origin: Origin, *, prefix: str, metrics: Metrics, background: Background
    ) -> None:
        self.origin = origin
        self.prefix = prefix
        self.metrics = metrics
        self.background = background

    def key(self, object_key: str, source_etag: str, canonical: str, variant: str) -> str:
        text = f"{source_etag}\0{canonical}\0{variant}".encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(text).digest()[:21]).decode("ascii")
        return f"{self.prefix}{object_key}/{digest}"

    def owns(self, object_key: str) -> bool:
        """Stored renders are not originals and are never served by their own key."""
        return object_key.startswith(self.prefix)

    async def get(self, key: str) -> tuple[bytes, str] | None:
        try:
            stored = await self.origin.fetch(key)
        except NotFound:
            self.metrics.lookup("result_storage", "miss")
            return None
        except ProxyError as exc:
            # A broken result store only costs a transform.
            self.metrics.lookup("result_storage", "miss")
            log.warning("result storage read failed: %s", exc.detail)
            return None
        if stored is None or not stored.meta.content_type.startswith("image/"):
            self.metrics.lookup("result_storage", "miss")
            return None
        self.metrics.lookup("result_storage", "hit")
        return stored.body, stored.meta.content_type

    def put_later(self, key: str, body: bytes, content_type: str) -> None:
        self.background.spawn(self._put(key, body, content_type), "result storage write")

    async def _put(self, key: str, body: bytes, content_type: str) -> None:
        try:
            await self.origin.put(key, body, content_type)
        except OriginError as exc:
            self.metrics.result_storage_writes.labels("error").inc()
            log.warning("result storage write failed: %s", exc.detail)
            return
        self.metrics.result_storage_writes.labels("ok").inc()
