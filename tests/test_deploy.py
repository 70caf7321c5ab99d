"""Everything an SRE deploys, checked with the tools of each ecosystem."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import shutil
import subprocess
import sys
import time
import tomllib
import venv
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import hcl2
import pytest
import yaml

from proxy.signing import Signer
from tests.servers import ROOT, free_port, run, wait_ready

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = shutil.which(name) or (str(BIN / name) if (BIN / name).exists() else None)
    if path is None:
        pytest.fail(f"{name} is not installed (it is a test dependency)")
    return path


def version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


# -- Dockerfile -------------------------------------------------------------------------------


def test_hadolint_clean() -> None:
    out = subprocess.run(
        [tool("hadolint"), "--failure-threshold", "warning", str(ROOT / "Dockerfile")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_shape() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert text.count("FROM ") == 2  # multi-stage
    assert f"ARG VERSION={version()}" in text
    assert re.search(r"^USER 10001", text, re.M)
    assert 'ENTRYPOINT ["originshield"]' in text
    assert 'CMD ["serve"' in text
    assert 'CMD ["originshield", "healthcheck"]' in text
    assert "EXPOSE 8080" in text
    assert "org.opencontainers.image.title" in text
    runtime = text.split("AS runtime", 1)[1]
    assert "gcc" not in runtime and "build-essential" not in runtime
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".git" in ignored and ".venv" in ignored


def test_install_steps_of_the_dockerfile_outside_docker(tmp_path: Path) -> None:
    """Build the wheels and install them into a fresh venv with no index, as the image does."""
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels), str(ROOT)],
                   check=True, timeout=600)  # fmt: skip
    built = next(wheels.glob("originshield-*.whl"))
    subprocess.run([*pip, "wheel", "--quiet", "--wheel-dir", str(wheels), str(built)],
                   check=True, timeout=900)  # fmt: skip
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "--quiet", "--no-index", "--find-links", str(wheels),
         f"originshield=={version()}"],
        check=True, timeout=900,
    )  # fmt: skip
    exe = env_dir / "bin" / "originshield"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=False,
                         cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    for command in ("serve", "sign", "check-config", "healthcheck"):
        assert command in out.stdout
    # The installed package renders with the bundled libvips, away from the source tree.
    check = subprocess.run(
        [str(py), "-c", "import pyvips, proxy.transform; print(pyvips.version(0))"],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr


# -- healthcheck and check-config -------------------------------------------------------------


def test_healthcheck_command(tmp_path: Path, serve: Any) -> None:
    port = free_port()
    nothing = run("healthcheck", "--port", str(port))
    assert nothing.returncode == 1
    assert "unhealthy" in nothing.stderr
    serve("--port", str(port), cwd=tmp_path)
    wait_ready(port)
    ok = run("healthcheck", "--port", str(port))
    assert ok.returncode == 0, ok.stderr


def test_check_config_on_the_shipped_config() -> None:
    env = {"ORIGINSHIELD_SIGNING__KEYS": "a-signing-key-for-the-check"}
    ok = run("check-config", "--config", "config/originshield.toml", env=env)
    assert ok.returncode == 0, ok.stderr
    missing = run("check-config", "--config", "config/originshield.toml")
    assert missing.returncode == 2
    assert "signing.keys" in missing.stderr


# -- Kubernetes -------------------------------------------------------------------------------


def manifests() -> list[Path]:
    base = K8S / "base"
    skip = {"kustomization.yaml", "servicemonitor.yaml"}
    return sorted(p for p in base.glob("*.yaml") if p.name not in skip)


def validate(paths: list[str]) -> None:
    out = subprocess.run(
        [tool("kubernetes-validate"), "--strict", *paths], capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "ERROR" not in text


def test_manifests_validate_strictly() -> None:
    validate([str(p) for p in manifests()])


def test_overlay_renders_and_validates(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("no kustomize build available (kubectl)")
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / "production")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rendered = tmp_path / "production.yaml"
    rendered.write_text(out.stdout)
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
            "ConfigMap", "NetworkPolicy", "ServiceMonitor"} <= kinds  # fmt: skip
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert deployment["metadata"]["namespace"] == "images"
    assert deployment["spec"]["replicas"] == 3
    validate([str(rendered)])


def test_deployment_is_production_ready() -> None:
    dep = yaml.safe_load((K8S / "base" / "deployment.yaml").read_text())
    spec = dep["spec"]
    assert spec["replicas"] >= 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    (container,) = pod["containers"]
    sec = container["securityContext"]
    assert sec["readOnlyRootFilesystem"] is True
    assert sec["allowPrivilegeEscalation"] is False
    assert sec["capabilities"]["drop"] == ["ALL"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert "limits" in container["resources"] and "requests" in container["resources"]
    config = tomllib.loads((ROOT / "config" / "originshield.toml").read_text())
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    grace = config["server"]["shutdown_grace"]
    assert pod["terminationGracePeriodSeconds"] > grace + pre_stop
    secrets = {e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"] if "valueFrom" in e}
    template = yaml.safe_load((K8S / "base" / "secret.template.yaml").read_text())
    assert secrets == set(template["stringData"])
    assert all(v.startswith("REPLACE") for v in template["stringData"].values())
    monitor = yaml.safe_load((K8S / "base" / "servicemonitor.yaml").read_text())
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


def test_configmap_copy_matches_config() -> None:
    for name in ("originshield.toml", "cloudflare-ips.txt"):
        assert (K8S / "base" / name).read_text() == (ROOT / "config" / name).read_text(), name


# -- compose ----------------------------------------------------------------------------------


def test_compose_stack(tmp_path: Path) -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert set(compose["services"]) == {"originshield", "prometheus", "grafana"}
    app = compose["services"]["originshield"]
    assert app["read_only"] is True
    assert "/tmp" in app["tmpfs"]
    for section in ("datasources/prometheus.yaml", "dashboards/originshield.yaml"):
        assert yaml.safe_load((DEPLOY / "grafana" / "provisioning" / section).read_text())
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed")
    config = (DEPLOY / "prometheus" / "compose" / "prometheus.yml").read_text()
    config = config.replace("/etc/prometheus/rules", str(DEPLOY / "prometheus" / "rules"))
    (tmp_path / "prometheus.yml").write_text(config)
    out = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")],
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


# -- Cloudflare -------------------------------------------------------------------------------


def _unquote(value: Any) -> Any:
    """python-hcl2 keeps the quotes of labels and strings; drop them."""
    if isinstance(value, dict):
        return {_unquote(k): _unquote(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def load_tf() -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for path in sorted((DEPLOY / "cloudflare").glob("*.tf")):
        with path.open() as fh:
            for key, value in _unquote(hcl2.load(fh)).items():
                if isinstance(value, list):
                    merged.setdefault(key, []).extend(value)
    return merged


def test_terraform_parses_and_has_every_piece() -> None:
    tf = load_tf()
    resources = {next(iter(r)) for r in tf["resource"]}
    assert {"cloudflare_record", "cloudflare_ruleset", "cloudflare_tiered_cache"} <= resources
    rulesets = [r["cloudflare_ruleset"] for r in tf["resource"] if "cloudflare_ruleset" in r]
    phases = {next(iter(r.values()))["phase"] for r in rulesets}
    assert phases == {"http_request_cache_settings", "http_request_firewall_custom",
                      "http_request_late_transform"}  # fmt: skip
    variables = {next(iter(v)) for v in tf["variable"]}
    assert {"zone_id", "hostname", "origin_hostname", "signing_key", "token_ttl",
            "origin_lock_secret"} <= variables  # fmt: skip
    sensitive = {next(iter(v)) for v in tf["variable"] if next(iter(v.values())).get("sensitive")}
    assert {"signing_key", "origin_lock_secret"} <= sensitive


def waf_is_timed_hmac_valid_v0(secret: str, message_mac: str, ttl: int, now: int, sep: int) -> bool:
    """Cloudflare's documented algorithm, written from its description: the input ends with
    <separator><10-digit timestamp>-<base64 MAC, URL-encoded>; the MAC is HMAC-SHA256 over the
    message (before the separator) followed by the timestamp."""
    m = re.search(r"(\d{10})-([^-]+)$", message_mac)
    if m is None:
        return False
    ts, mac = m.group(1), unquote(m.group(2))
    message = message_mac[: m.start() - sep]
    want = base64.b64encode(hmac.new(secret.encode(), (message + ts).encode(),
                                     hashlib.sha256).digest()).decode()  # fmt: skip
    return hmac.compare_digest(want, mac) and int(ts) <= now < int(ts) + ttl


def test_waf_expression_matches_the_token_format() -> None:
    tf = load_tf()
    expression = tf["locals"][0]["verify_expression"]
    call = re.search(r"is_timed_hmac_valid_v0\(([^)]*)\)", expression)
    assert call is not None
    args = [a.strip() for a in call.group(1).split(",")]
    assert args[0] == '\\"${var.signing_key}\\"' or "var.signing_key" in args[0]
    assert args[1] == "http.request.uri"  # path and query, as originshield signs them
    assert "var.token_ttl" in args[2]
    assert args[3] == "http.request.timestamp.sec"
    separator = int(args[4])
    assert separator == len("?verify=") == len("&verify=")
    assert "not is_timed_hmac_valid_v0" in expression  # block the invalid ones
    secret, ttl = "edge-and-origin-share-this-key", 3600
    now = int(time.time())
    for params in ({}, {"w": 400, "f": "webp"}):
        url = Signer([secret]).timed_url("products/1.jpg", issued_at=now - 10, **params)
        assert waf_is_timed_hmac_valid_v0(secret, url, ttl, now, separator)
        assert not waf_is_timed_hmac_valid_v0(secret, url.replace("products", "product"), ttl,
                                              now, separator)  # fmt: skip
        assert not waf_is_timed_hmac_valid_v0(secret, url, ttl, now + ttl, separator)
