"""In-process caches with byte budgets, and single-flight coalescing of identical misses."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, Protocol, TypeVar

from cachetools import LRUCache

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Sized(Protocol):
    @property
    def nbytes(self) -> int: ...


S = TypeVar("S", bound=Sized)


class ByteLRU(Generic[K, S]):
    """LRU whose budget is in bytes, not entries. A budget of 0 turns it off."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._lru: LRUCache[K, S] | None = (
            LRUCache(maxsize=budget, getsizeof=lambda v: v.nbytes) if budget > 0 else None
        )

    def get(self, key: K) -> S | None:
        return None if self._lru is None else self._lru.get(key)

    def put(self, key: K, value: S) -> bool:
        if self._lru is None or value.nbytes > self.budget:
            return False
        self._lru[key] = value
        return True

    def pop(self, key: K) -> None:
        if self._lru is not None:
            self._lru.pop(key, None)

    @property
    def nbytes(self) -> int:
        return 0 if self._lru is None else int(self._lru.currsize)

    def __len__(self) -> int:
        return 0 if self._lru is None else len(self._lru)


class SingleFlight(Generic[K, V]):
    """Concurrent calls for the same key share one execution.

    The work runs in its own task: a leader whose client goes away stops waiting, but the work
    goes on for the followers. Results and errors are not kept once the work is done.
    """

    def __init__(self) -> None:
        self._inflight: dict[K, asyncio.Task[V]] = {}

    def __len__(self) -> int:
        return len(self._inflight)

    async def run(self, key: K, work: Callable[[], Awaitable[V]]) -> tuple[V, bool]:
        """(result, True if this call led the work)."""
        task = self._inflight.get(key)
        if task is not None:
            return await asyncio.shield(task), False
        task = asyncio.ensure_future(work())
        self._inflight[key] = task
        task.add_done_callback(lambda t: self._done(key, t))
        return await asyncio.shield(task), True

    def _done(self, key: K, task: asyncio.Task[V]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        # Mark the exception retrieved even if every waiter went away.
        if not task.cancelled():
            with contextlib.suppress(BaseException):
                task.exception()
