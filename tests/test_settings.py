"""Configuration: file + env, secrets policy, one-line errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.app import limits_from
from proxy.settings import DEV_SIGNING_KEY, ConfigError, load_settings, region_from_endpoint

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "config" / "originshield.toml"
KEYS = {"ORIGINSHIELD_SIGNING__KEYS": "first-key-0123456789,second-key-0123456789"}


def test_shipped_config_loads_with_keys_from_env() -> None:
    settings = load_settings(SHIPPED, KEYS)
    assert settings.origin.kind == "s3"
    assert settings.signing_keys() == ["first-key-0123456789", "second-key-0123456789"]
    assert not settings.development
    assert set(settings.presets) == {"thumb", "card"}
    limits_from(settings)


def test_shipped_config_without_keys_fails_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^signing\.keys: no signing key"):
        load_settings(SHIPPED, {})


def test_env_overrides_file() -> None:
    env = {
        **KEYS,
        "ORIGINSHIELD_ORIGIN__BUCKET": "other",
        "ORIGINSHIELD_SERVER__PORT": "9000",
        "ORIGINSHIELD_TRANSFORM__ALLOWED_WIDTHS": "200, 400",
        "ORIGINSHIELD_SIGNING__REQUIRED": "false",
    }
    settings = load_settings(SHIPPED, env)
    assert settings.origin.bucket == "other"
    assert settings.server.port == 9000
    assert settings.transform.allowed_widths == [200, 400]
    assert settings.signing.required is False


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ORIGINSHIELD_SERVER__PORT": "http"}, "server.port: Input should be a valid integer"),
        ({"ORIGINSHIELD_SERVER__NOPE": "1"}, "unknown key server.nope"),
        ({"ORIGINSHIELD_NOPE__X": "1"}, "unknown section 'nope'"),
        ({"ORIGINSHIELD_SERVER__KEEPALIVE_TIMEOUT": "75"}, "server.keepalive_timeout"),
        ({"ORIGINSHIELD_SIGNING__KEYS": "short"}, "at least 16 characters"),
        ({"ORIGINSHIELD_ORIGIN__KIND": "ftp"}, "origin.kind"),
    ],
)
def test_errors_are_one_line_naming_the_key(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(SHIPPED, {**KEYS, **env})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_secret_in_config_file_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[signing]\nkeys = ["in-the-file-0123456789"]\n')
    with pytest.raises(ConfigError, match=r"^signing\.keys: secrets are not read"):
        load_settings(cfg, {})
    cfg.write_text('[origin]\nsecret_access_key = "x"\n')
    with pytest.raises(ConfigError, match=r"^origin\.secret_access_key"):
        load_settings(cfg, KEYS)


def test_secrets_file(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# rotated 2026-12\nnew-key-0123456789abc\nold-key-0123456789abc\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[signing]\nkeys_file = "{keys}"\n[origin]\nkind = "local"\n')
    settings = load_settings(cfg, {})
    assert settings.signing_keys() == ["new-key-0123456789abc", "old-key-0123456789abc"]
    cfg.write_text(f'[signing]\nkeys_file = "{tmp_path / "missing"}"\n')
    with pytest.raises(ConfigError, match=r"^signing\.keys_file: cannot read"):
        load_settings(cfg, {})


def test_unknown_key_in_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[server]\nprot = 1\n")
    with pytest.raises(ConfigError, match=r"^server\.prot: Extra inputs are not permitted"):
        load_settings(cfg, KEYS)


def test_s3_requires_endpoint_and_bucket() -> None:
    with pytest.raises(ConfigError, match=r"^origin\.endpoint_url: required"):
        load_settings(None, {**KEYS, "ORIGINSHIELD_ORIGIN__KIND": "s3"})


def test_embedded_default_is_development() -> None:
    settings = load_settings(None, {})
    assert settings.development
    assert settings.origin.kind == "local"
    assert settings.signing_keys() == [DEV_SIGNING_KEY]
    assert not load_settings(None, KEYS).development


def test_region_from_b2_endpoint() -> None:
    assert region_from_endpoint("https://s3.us-west-004.backblazeb2.com") == "us-west-004"
    assert region_from_endpoint("https://s3.eu-central-003.backblazeb2.com/") == "eu-central-003"
    assert region_from_endpoint("http://127.0.0.1:9000") == "us-east-1"
