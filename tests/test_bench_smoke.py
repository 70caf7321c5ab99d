"""The benchmark still runs end to end (a second per step, no thresholds): it must not rot."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.test_cli import ROOT


def test_benchmark_smoke_run() -> None:
    if shutil.which("wrk") is None:
        if os.environ.get("CI"):
            pytest.fail("wrk is not installed")
        pytest.skip("wrk is not installed (apt-get install wrk)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORIGINSHIELD_", "AWS_"))}
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    rows = (
        "libvips limit loop, webp",
        "originshield cold, jpeg, c=32",
        "originshield hot, 2 process(es)",
        "bare aiohttp, 1 process(es)",
        "stampede",
    )
    for row in rows:
        assert row in out.stdout, row
