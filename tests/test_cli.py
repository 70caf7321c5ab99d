"""The command line, run as a user would: sign, check-config, and serve in a subprocess."""

from __future__ import annotations

import signal
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from proxy.signing import Verifier
from tests import images
from tests.conftest import KEY
from tests.servers import free_port, run, wait_ready


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
