"""Starting originshield (and other servers) from tests, and waiting for them to answer."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
EXE = [sys.executable, "-m", "proxy"]


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Any:
    return subprocess.run(
        [*EXE, *args],
        capture_output=True,
        text=True,
        env={**clean_env(), **(env or {})},
        cwd=cwd or ROOT,
        timeout=60,
        check=False,
    )


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any originshield or AWS setting, able to import ``proxy``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORIGINSHIELD_", "AWS_"))}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("server did not start")


async def wait_http(url: str, timeout: float = 30.0) -> None:
    """Return once ``url`` answers 200; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"{url} did not answer 200 within {timeout:.0f}s")
