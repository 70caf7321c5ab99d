"""The command line, run as a user would: sign, check-config, and serve in a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.signing import Verifier
from tests import images
from tests.conftest import KEY

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


def test_sign_prints_a_verifiable_path() -> None:
    out = run("sign", "products/1.jpg", "w=400", "f=webp", env={"ORIGINSHIELD_SIGNING__KEYS": KEY})
    assert out.returncode == 0, out.stderr
    url = out.stdout.strip()
    assert url.startswith("/products/1.jpg?f=webp&w=400&s=")
    Verifier([KEY], ttl=60).verify(url)


def test_sign_timed() -> None:
    out = run("sign", "--timed", "a.jpg", "w=1", env={"ORIGINSHIELD_SIGNING__KEYS": KEY})
    assert out.returncode == 0, out.stderr
    verified = Verifier([KEY], ttl=60).verify(out.stdout.strip())
    assert verified.expires_at is not None


def test_sign_rejects_bad_pair() -> None:
    out = run("sign", "a.jpg", "w400", env={"ORIGINSHIELD_SIGNING__KEYS": KEY})
    assert out.returncode != 0
    assert "name=value" in out.stderr


def test_check_config_masks_secrets_and_fails_cleanly(tmp_path: Path) -> None:
    env = {"ORIGINSHIELD_SIGNING__KEYS": KEY, "ORIGINSHIELD_ORIGIN__SECRET_ACCESS_KEY": "topsecret"}
    env["ORIGINSHIELD_ORIGIN__ACCESS_KEY_ID"] = "keyid-visible-only-masked"
    ok = run("check-config", "--config", "config/originshield.toml", env=env)
    assert ok.returncode == 0, ok.stderr
    assert KEY not in ok.stdout and "topsecret" not in ok.stdout
    assert "**********" in ok.stdout
    broken = tmp_path / "broken.toml"
    broken.write_text("[transform]\nqueue = -1\n")
    bad = run("check-config", "--config", str(broken), env=env)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "originshield: config error: transform.queue: Input should be greater than or equal to 0"
    ]


@pytest.fixture
def serve() -> Iterator[Any]:
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str, env: dict[str, str] | None = None, cwd: Path) -> Any:
        proc = subprocess.Popen(
            [*EXE, "serve", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**clean_env(), **(env or {})},
            cwd=cwd,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


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


def fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=20) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_embedded_default_serves_its_sample_urls(serve: Any, tmp_path: Path) -> None:
    port = free_port()
    proc = serve("--port", str(port), cwd=tmp_path)
    wait_ready(port)
    assert proc.stdout is not None
    lines: list[str] = []
    while len(lines) < 6:
        line = proc.stdout.readline()
        assert line, "banner ended early"
        if line.strip().startswith("http://"):
            lines.append(line.strip())
    assert (tmp_path / "images" / "products" / "1.jpg").exists()
    for url in lines:
        status, headers, body = fetch(url)
        assert status == 200, (url, body)
        assert headers["Content-Type"].startswith("image/")
        assert images.decode(body).width > 0
    status, _, _ = fetch(lines[0].replace("w=400", "w=500"))
    assert status == 403
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0


def test_serve_s3_from_config_file_and_env(
    serve: Any, tmp_path: Path, s3_server: str, bucket: tuple[str, Any]
) -> None:
    name, client = bucket
    client.put_object(Bucket=name, Key="shop/1.jpg", Body=images.jpeg(images.photo(800, 600)))
    config = tmp_path / "originshield.toml"
    config.write_text(
        f'[origin]\nkind = "s3"\nendpoint_url = "{s3_server}"\nbucket = "{name}"\n'
        'region = "us-east-1"\n[log]\naccess = false\n'
    )
    port = free_port()
    env = {
        "ORIGINSHIELD_SIGNING__KEYS": KEY,
        "ORIGINSHIELD_ORIGIN__ACCESS_KEY_ID": "testing",
        "ORIGINSHIELD_ORIGIN__SECRET_ACCESS_KEY": "testing",
    }
    serve("--config", str(config), "--port", str(port), env=env, cwd=tmp_path)
    wait_ready(port)
    signed = run("sign", "--config", str(config), "shop/1.jpg", "w=400", "f=webp", env=env)
    path = signed.stdout.strip()
    status, headers, body = fetch(f"http://127.0.0.1:{port}{path}")
    assert status == 200
    assert headers["Content-Type"] == "image/webp"
    assert images.decode(body).width == 400
    status, _, body = fetch(f"http://127.0.0.1:{port}{path.replace('w=400', 'w=800')}")
    assert status == 403
    assert body == b"invalid signature\n"
