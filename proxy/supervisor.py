"""``serve --workers N``: N processes sharing one port through SO_REUSEPORT.

The kernel spreads connections over the processes, so cache hits use every core. Each process
has its own caches and coalescing (see README). The parent only starts, restarts and stops the
children: SIGTERM to the parent is passed on, and each child drains on its own.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import time
from multiprocessing.process import BaseProcess
from types import FrameType

log = logging.getLogger("originshield")
RESTART_DELAY = 1.0


def _child(config: str | None, host: str, port: int, index: int) -> None:
    from proxy import app, logs
    from proxy.settings import load_settings

    settings = load_settings(config)
    logs.setup(settings.log.level, settings.log.format)
    app.run(settings, host, port, reuse_port=True)


def run_workers(count: int, config: str | None, host: str, port: int) -> int:
    ctx = multiprocessing.get_context("spawn")
    stopping = False

    def start(index: int) -> BaseProcess:
        proc = ctx.Process(
            target=_child, args=(config, host, port, index), name=f"originshield-{index}"
        )
        proc.start()
        return proc

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                proc.terminate()

    procs = [start(i) for i in range(count)]
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while True:
        for i, proc in enumerate(procs):
            proc.join(timeout=0.2)
            if proc.exitcode is not None and not stopping:
                log.error("worker %d exited with %s; restarting", i, proc.exitcode)
                time.sleep(RESTART_DELAY)
                if not stopping:
                    procs[i] = start(i)
        if stopping and all(p.exitcode is not None for p in procs):
            break
    # A child still starting up when SIGTERM came had no handler yet and died of the signal:
    # it held no requests, so that is a clean stop too.
    clean = (0, -signal.SIGTERM)
    return 0 if all(p.exitcode in clean for p in procs) else 1
