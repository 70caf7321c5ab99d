"""A bounded pool for pyvips work, with admission control.

At most ``concurrency`` transforms run at once and at most ``queue`` wait; past that a request
is refused at once with 503 and ``Retry-After`` rather than piling up. A slot is released only
when its thread has really finished, so a timed-out transform can never oversubscribe the CPUs.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ParamSpec, TypeVar

from proxy.errors import Overloaded

P = ParamSpec("P")
T = TypeVar("T")
CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cpus(cpu_max: Path = CPU_MAX) -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota (a
    container's ``--cpus``, a Kubernetes CPU limit). ``os.cpu_count()`` sees every CPU of the
    host, which in a small container means far more renders, and memory, than it can carry."""
    count = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_max.read_text().split()
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return count


class Workers:
    def __init__(
        self,
        concurrency: int,
        queue: int,
        observe: Callable[[str, float], None] | None = None,
    ) -> None:
        """``observe(stage, seconds)`` hears how long each call waited ("queue") and ran
        ("transform")."""
        self._observe = observe
        # Renders with one libvips thread each, three per CPU: while one thread waits for the
        # GIL or for memory, another has work for the CPU. Two per CPU left the CPUs idle about
        # 6% of the time under load, three about 4% (docs/benchmarks.md).
        self.concurrency = concurrency or 3 * available_cpus()
        self.queue = queue
        self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="vips")
        self._slots = asyncio.Semaphore(self.concurrency)
        self.waiting = 0
        self.running = 0

    @property
    def saturated(self) -> bool:
        return self.running >= self.concurrency and self.waiting >= self.queue

    async def run(self, budget: float, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        if self._slots.locked() and self.waiting >= self.queue:
            raise Overloaded("server busy, retry shortly", retry_after=1)
        if self._slots.locked():
            await self._wait_for_slot(deadline)
        else:
            # A free slot is taken at once (acquire does not suspend); no timer needed.
            await self._slots.acquire()
            self._note("queue", 0.0)
        self.running += 1
        started = time.perf_counter()

        def work() -> T:
            try:
                return fn(*args, **kwargs)
            finally:
                # Measured in the thread: the time the CPU was really busy with it.
                self._note("transform", time.perf_counter() - started)

        # The request's context goes along, so per-request timing reaches the thread.
        # (submit + wrap_future is what run_in_executor does, minus its per-call inspection of
        # the callable.)
        future = asyncio.wrap_future(
            self._executor.submit(contextvars.copy_context().run, work), loop=loop
        )
        future.add_done_callback(self._release)  # type: ignore[arg-type]
        try:
            async with asyncio.timeout_at(deadline):
                return await asyncio.shield(future)
        except TimeoutError:
            raise Overloaded("transform took too long", retry_after=2) from None

    async def _wait_for_slot(self, deadline: float) -> None:
        self.waiting += 1
        queued = time.perf_counter()
        try:
            async with asyncio.timeout_at(deadline):
                await self._slots.acquire()
        except TimeoutError:
            raise Overloaded("server busy, retry shortly", retry_after=2) from None
        finally:
            self.waiting -= 1
            self._note("queue", time.perf_counter() - queued)

    def _note(self, stage: str, seconds: float) -> None:
        if self._observe is not None:
            self._observe(stage, seconds)

    def _release(self, future: asyncio.Future[object]) -> None:
        self.running -= 1
        self._slots.release()
        # A caller that timed out no longer awaits this; mark its outcome as seen.
        if not future.cancelled():
            future.exception()

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
