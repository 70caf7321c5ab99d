"""The Cloudflare Worker, run in the real Workers runtime (workerd through miniflare) by Node's
test runner, in front of a real originshield."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from proxy.signing import Signer
from tests import images
from tests.servers import ROOT, free_port, wait_ready

WORKER = ROOT / "deploy" / "cloudflare" / "worker"
VECTORS = json.loads((ROOT / "tests" / "vectors" / "signing.json").read_text())
LOCK_VALUE = "edge-to-origin-lock-secret"


def test_worker_in_workerd(tmp_path: Path, serve: Any) -> None:
    node = shutil.which("node")
    if node is None or not (WORKER / "node_modules" / "miniflare").exists():
        if os.environ.get("CI"):
            pytest.fail("node and the Worker's npm packages are needed (make test installs them)")
        pytest.skip("node or miniflare missing (npm ci --prefix deploy/cloudflare/worker)")
    root = tmp_path / "images"
    for key in (
        "products/1.jpg",
        "products/2.jpg",
        "products/3.jpg",
        "products/123/front view.jpg",
    ):
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(images.jpeg(images.photo(640, 480)))
    (root / "a").mkdir()
    (root / "a" / "b+c.png").write_bytes(images.png(images.photo(300, 200)))
    port = free_port()
    env = {
        "ORIGINSHIELD_ORIGIN__ROOT": str(root),
        "ORIGINSHIELD_SIGNING__KEYS": VECTORS["secret"],
        "ORIGINSHIELD_SIGNING__TTL": str(VECTORS["ttl"]),
        "ORIGINSHIELD_ORIGIN_LOCK__ENABLED": "true",
        "ORIGINSHIELD_ORIGIN_LOCK__SECRETS": LOCK_VALUE,
        "ORIGINSHIELD_LOG__ACCESS": "false",
    }
    serve("--port", str(port), env=env, cwd=tmp_path)
    wait_ready(port)
    signer = Signer([VECTORS["secret"]])
    now = int(time.time())
    ttl = VECTORS["ttl"]
    fixture = {
        "origin": f"http://127.0.0.1:{port}",
        "secret": VECTORS["secret"],
        "ttl": ttl,
        "lock": {"header": "X-Origin-Auth", "value": LOCK_VALUE},
        "vectors": VECTORS,
        "fresh": {
            "timed_a": signer.timed_url("products/2.jpg", issued_at=now - 100, w=200),
            "timed_a_remaining": ttl - 100,
            "timed_b": signer.timed_url("products/2.jpg", issued_at=now - 1000, w=200),
            "timed_b_remaining": ttl - 1000,
            "auto": signer.timed_url("products/3.jpg", issued_at=now - 5, w=120, f="auto"),
            "expired": signer.timed_url("products/2.jpg", issued_at=now - ttl - 5, w=200),
        },
    }
    path = tmp_path / "fixture.json"
    path.write_text(json.dumps(fixture))
    out = subprocess.run(
        [node, "--test", "test/"], cwd=WORKER, env={**os.environ, "WORKER_FIXTURE": str(path)},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]
    assert "# fail 0" in out.stdout
