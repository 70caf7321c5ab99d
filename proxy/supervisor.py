"""``serve --workers N``: N processes sharing one port through SO_REUSEPORT.

The kernel spreads connections over the processes, so cache hits use every core. Each process
has its own caches and coalescing (see README). The parent only starts, restarts and stops the
children: SIGTERM to the parent is passed on, and each child drains on its own.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import tempfile
import time
from multiprocessing.process import BaseProcess
from types import FrameType

log = logging.getLogger("originshield")
RESTART_DELAY = 1.0


def _child(config: str | None, host: str, port: int, metrics_dir: str) -> None:
    import os

    # prometheus-client picks its multiprocess value store when first imported.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    from proxy import app, logs
    from proxy.settings import load_settings

    settings = load_settings(config)
    logs.setup(settings.log.level, settings.log.format)
    app.run(app.serve(settings, host, port, reuse_port=True, multiprocess_dir=metrics_dir))


def run_workers(count: int, config: str | None, host: str, port: int) -> int:
    with tempfile.TemporaryDirectory(prefix="originshield-metrics-") as metrics_dir:
        return _supervise(count, config, host, port, metrics_dir)


def _supervise(count: int, config: str | None, host: str, port: int, metrics_dir: str) -> int:
    from prometheus_client import multiprocess

    ctx = multiprocessing.get_context("spawn")
    stopping = False

    def start(index: int) -> BaseProcess:
        proc = ctx.Process(
            target=_child, args=(config, host, port, metrics_dir), name=f"originshield-{index}"
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
                if proc.pid is not None:
                    multiprocess.mark_process_dead(proc.pid, metrics_dir)  # type: ignore[no-untyped-call]
                time.sleep(RESTART_DELAY)
                if not stopping:
                    procs[i] = start(i)
        if stopping and all(p.exitcode is not None for p in procs):
            break
    # A child still starting up when SIGTERM came had no handler yet and died of the signal:
    # it held no requests, so that is a clean stop too.
    clean = (0, -signal.SIGTERM)
    return 0 if all(p.exitcode in clean for p in procs) else 1
