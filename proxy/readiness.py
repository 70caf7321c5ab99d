"""``/readyz``: origin reachable (checked at most every ``interval`` seconds), not draining,
transform queue not saturated."""

from __future__ import annotations

import logging
import time

from proxy.origin import Origin
from proxy.workers import Workers

log = logging.getLogger("originshield")


class Readiness:
    def __init__(self, origin: Origin, workers: Workers, interval: float = 2.0) -> None:
        self.origin = origin
        self.workers = workers
        self.interval = interval
        self.draining = False
        self._checked_at = -interval
        self._last: str | None = None

    async def problem(self) -> str | None:
        """None when ready, else a one-line reason."""
        if self.draining:
            return "draining"
        if self.workers.saturated:
            return "transform queue saturated"
        now = time.monotonic()
        if now - self._checked_at >= self.interval:
            self._checked_at = now
            try:
                await self.origin.ping()
                self._last = None
            except Exception as exc:  # any failure means not ready
                if self._last is None:
                    log.warning("origin unreachable: %s", getattr(exc, "detail", exc))
                self._last = "origin unreachable"
        return self._last
