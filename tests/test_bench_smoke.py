"""The benchmark still runs end to end (a second per step, no thresholds): it must not rot."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import ROOT, clean_env


def wrk_env() -> dict[str, str]:
    if shutil.which("wrk") is None:
        if os.environ.get("CI"):
            pytest.fail("wrk is not installed")
        pytest.skip("wrk is not installed (apt-get install wrk)")
    return clean_env()


def test_benchmark_smoke_run() -> None:
    env = wrk_env()
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


def test_variant_comparison_smoke_run(tmp_path: Path) -> None:
    env = wrk_env()
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "compare.py"), "--rounds", "1", "--seconds", "1",
         "--images", str(tmp_path), "base=", "two=ORIGINSHIELD_TRANSFORM__CONCURRENCY=2"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "round 0: loop" in out.stdout
    for name in ("base", "two"):
        assert re.search(rf"^  {name} +median \d\.\d{{3}}x", out.stdout, re.M), out.stdout
