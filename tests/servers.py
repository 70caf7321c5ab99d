"""Waiting for a server started by a test to answer."""

from __future__ import annotations

import asyncio
import time

import aiohttp


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
