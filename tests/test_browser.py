"""A real browser: headless Chromium (Debian's chromium + chromium-driver, through selenium)
loads the example shop served against a real originshield."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import KEY
from tests.servers import ROOT, clean_env, free_port, wait_ready

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = ROOT / "artifacts"


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[str]:
    env = clean_env(ORIGINSHIELD_SIGNING__KEYS=KEY)
    origin_port, shop_port = free_port(), free_port()
    procs = []
    try:
        procs.append(subprocess.Popen(
            [sys.executable, "-c", "from proxy.samples import generate; from pathlib import Path;"
             " generate(Path('images'))"], cwd=tmp_path, env=env,
        ))  # fmt: skip
        procs[-1].wait(timeout=60)
        env["ORIGINSHIELD_ORIGIN__ROOT"] = str(tmp_path / "images")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "--port", str(origin_port)], cwd=tmp_path,
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))  # fmt: skip
        wait_ready(origin_port)
        env["IMAGE_BASE_URL"] = f"http://127.0.0.1:{origin_port}"
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "examples.fastapi_shop.app:app", "--port",
             str(shop_port), "--log-level", "warning"], cwd=ROOT, env=env,
        ))  # fmt: skip
        wait_port(shop_port)
        yield f"http://127.0.0.1:{shop_port}/"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)


def browser(dpr: float) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--window-size=1200,900",
                f"--force-device-scale-factor={dpr}"):  # fmt: skip
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


IMAGES_JS = """
return Array.from(document.images).map(i => ({
  complete: i.complete, naturalWidth: i.naturalWidth, currentSrc: i.currentSrc,
  width: i.getBoundingClientRect().width}));
"""


@pytest.mark.parametrize(("dpr", "expected_width"), [(1, 300), (2, 600)])
def test_chromium_loads_every_image(shop: str, dpr: int, expected_width: int) -> None:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromium-driver are not installed")
        pytest.skip(
            "chromium / chromium-driver not installed (apt-get install chromium chromium-driver)"
        )
    driver = browser(dpr)
    try:
        driver.get(shop)
        deadline = time.monotonic() + 30
        while True:
            found = driver.execute_script(IMAGES_JS)
            if (found and all(i["complete"] for i in found)) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(found) == 3
        for img in found:
            assert img["complete"] and img["naturalWidth"] > 0, img
            assert "f=avif" in img["currentSrc"], img  # Chromium takes the AVIF <source>
            assert f"w={expected_width}&" in img["currentSrc"], img
            assert img["width"] == 300
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / f"shop-dpr{dpr}.png"))
    finally:
        driver.quit()
