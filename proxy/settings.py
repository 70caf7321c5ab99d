"""Configuration: a TOML file, then ``ORIGINSHIELD_<SECTION>__<KEY>`` environment overrides.

The only module that reads files or the environment. Secrets (signing keys, the bucket's key)
come from the environment or from a secrets file named in the config, never from the config file
itself, so ``config/`` can be committed and shown. Any problem stops start-up with one line
naming the key.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

ENV_PREFIX = "ORIGINSHIELD_"
# Keys that hold secrets: accepted from the environment or ``<key>_file``, refused in the file.
SECRET_KEYS = {
    ("signing", "keys"),
    ("origin", "access_key_id"),
    ("origin", "secret_access_key"),
    ("origin_lock", "secrets"),
}
DEV_SIGNING_KEY = "originshield-development-key-NOT-FOR-PRODUCTION"

OutputFormat = Literal["jpeg", "png", "webp", "avif", "gif"]
SourceFormat = Literal["jpeg", "png", "webp", "avif", "gif", "tiff", "svg", "heif"]


_DEFAULT_SOURCES: tuple[SourceFormat, ...] = ("jpeg", "png", "webp", "avif", "gif", "tiff")


class ConfigError(Exception):
    """One line: ``section.key: problem``."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    # Cloudflare keeps idle origin connections up to 900 s; closing earlier races its reuse.
    keepalive_timeout: Annotated[float, Field(gt=900)] = 960.0
    shutdown_grace: Annotated[float, Field(ge=0)] = 25.0
    # Seconds between SIGTERM and closing the listener, answering /readyz with 503 meanwhile.
    drain_delay: Annotated[float, Field(ge=0, le=300)] = 0.0
    workers: Annotated[int, Field(ge=1, le=256)] = 1
    max_url_length: Annotated[int, Field(ge=256, le=65536)] = 4096
    max_field_size: Annotated[int, Field(ge=1024, le=65536)] = 8190


class OriginSettings(_Section):
    kind: Literal["local", "s3"] = "local"
    root: str = "images"
    endpoint_url: str = ""
    region: str = ""
    bucket: str = ""
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    access_key_id_file: str = ""
    secret_access_key_file: str = ""
    connect_timeout: Annotated[float, Field(gt=0, le=60)] = 3.0
    read_timeout: Annotated[float, Field(gt=0, le=120)] = 10.0
    retries: Annotated[int, Field(ge=0, le=10)] = 3
    max_object_bytes: Annotated[int, Field(ge=1024)] = 50 * 1024 * 1024
    max_connections: Annotated[int, Field(ge=1, le=1024)] = 64
    # Keys must start with one of these prefixes (empty: any key).
    allowed_prefixes: list[str] = Field(default_factory=list)


class SigningSettings(_Section):
    keys: list[SecretStr] = Field(default_factory=list)
    keys_file: str = ""
    ttl: Annotated[int, Field(ge=1, le=365 * 86400)] = 3600
    required: bool = True
    max_clock_skew: Annotated[int, Field(ge=0, le=3600)] = 60


class TransformSettings(_Section):
    concurrency: Annotated[int, Field(ge=0, le=256)] = 0  # 0: three per usable CPU
    # Threads libvips uses inside one render; 0 keeps libvips' default (one per CPU).
    vips_threads: Annotated[int, Field(ge=0, le=64)] = 1
    queue: Annotated[int, Field(ge=0, le=100000)] = 64
    timeout: Annotated[float, Field(gt=0, le=120)] = 20.0
    max_width: Annotated[int, Field(ge=1, le=16383)] = 4096
    max_height: Annotated[int, Field(ge=1, le=16383)] = 4096
    max_output_pixels: Annotated[int, Field(ge=1)] = 16_777_216
    max_source_pixels: Annotated[int, Field(ge=1)] = 50_000_000
    max_frames: Annotated[int, Field(ge=1, le=10000)] = 200
    max_animation_pixels: Annotated[int, Field(ge=1)] = 200_000_000
    allowed_widths: list[Annotated[int, Field(ge=1, le=16383)]] = Field(default_factory=list)
    width_policy: Literal["round_up", "reject"] = "round_up"
    presets_only: bool = False
    source_formats: list[SourceFormat] = Field(default_factory=lambda: list(_DEFAULT_SOURCES))
    fail_on: Literal["none", "truncated", "error", "warning"] = "warning"
    quality_jpeg: Annotated[int, Field(ge=1, le=100)] = 80
    quality_webp: Annotated[int, Field(ge=1, le=100)] = 79
    quality_avif: Annotated[int, Field(ge=1, le=100)] = 63
    effort_webp: Annotated[int, Field(ge=0, le=6)] = 2
    effort_avif: Annotated[int, Field(ge=0, le=9)] = 2
    effort_png: Annotated[int, Field(ge=1, le=10)] = 3


class CacheSettings(_Section):
    renders_bytes: Annotated[int, Field(ge=0)] = 256 * 1024 * 1024
    originals_bytes: Annotated[int, Field(ge=0)] = 256 * 1024 * 1024
    negative_ttl: Annotated[float, Field(ge=0, le=3600)] = 30.0
    revalidate_after: Annotated[float, Field(ge=0)] = 300.0
    targets: Annotated[int, Field(ge=0)] = 100_000


class CacheControlSettings(_Section):
    browser_ttl: Annotated[int, Field(ge=0)] = 86400
    edge_ttl: Annotated[int, Field(ge=0)] = 30 * 86400
    stale_while_revalidate: Annotated[int, Field(ge=0)] = 86400
    stale_if_error: Annotated[int, Field(ge=0)] = 7 * 86400
    versioned_ttl: Annotated[int, Field(ge=0)] = 365 * 86400
    not_found_ttl: Annotated[int, Field(ge=0)] = 60


class ResultStorageSettings(_Section):
    enabled: bool = False
    prefix: str = "_originshield/renders/"


class MetricsSettings(_Section):
    enabled: bool = True
    port: Annotated[int, Field(ge=0, le=65535)] = 0  # 0: on the main port
    allowed_networks: list[str] = Field(default_factory=list)


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"
    access: bool = True


class OriginLockSettings(_Section):
    enabled: bool = False
    header: str = "X-Origin-Auth"
    secrets: list[SecretStr] = Field(default_factory=list)
    secrets_file: str = ""
    cloudflare_ips_only: bool = False
    # One range per line; relative paths are taken from the config file's folder.
    cloudflare_ranges_file: str = ""
    # Inline ranges; when empty they are read from cloudflare_ranges_file.
    cloudflare_ranges: list[str] = Field(default_factory=list)


class PresetsSettings(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class Settings(_Section):
    server: ServerSettings = ServerSettings()
    origin: OriginSettings = OriginSettings()
    signing: SigningSettings = SigningSettings()
    transform: TransformSettings = TransformSettings()
    cache: CacheSettings = CacheSettings()
    cache_control: CacheControlSettings = CacheControlSettings()
    result_storage: ResultStorageSettings = ResultStorageSettings()
    metrics: MetricsSettings = MetricsSettings()
    log: LogSettings = LogSettings()
    origin_lock: OriginLockSettings = OriginLockSettings()
    # name -> {param: value}; e.g. [presets.card] w = 600, h = 600, fit = "cover"
    presets: dict[str, dict[str, str | int | float | bool]] = Field(default_factory=dict)
    # True only for the embedded default: a generated sample folder and a development key.
    development: bool = False

    @field_validator("presets")
    @classmethod
    def _preset_names(
        cls, value: dict[str, dict[str, str | int | float | bool]]
    ) -> dict[str, dict[str, str | int | float | bool]]:
        for name in value:
            if not name or not all(c.isalnum() or c in "-_" for c in name):
                raise ValueError(f"preset name {name!r} may only use letters, digits, - and _")
        return value

    def signing_keys(self) -> list[str]:
        return [k.get_secret_value() for k in self.signing.keys]


def _is_list(annotation: Any) -> bool:
    if get_origin(annotation) is list:
        return True
    return any(get_origin(a) is list for a in get_args(annotation))


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        field = Settings.model_fields.get(section)
        if field is None or section in ("presets", "development"):
            raise ConfigError(f"{name}: unknown section {section!r}")
        model = field.annotation
        assert isinstance(model, type)
        assert issubclass(model, BaseModel)
        sub = model.model_fields.get(key)
        if sub is None:
            raise ConfigError(f"{name}: unknown key {section}.{key}")
        parsed: Any = value
        if _is_list(sub.annotation):
            parsed = [v.strip() for v in value.split(",") if v.strip()]
        out.setdefault(section, {})[key] = parsed
    return out


def _read_lines(path: str, where: str) -> list[str]:
    """Non-empty lines without ``#`` comments."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path} ({exc.strerror})") from None
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def _read_secret_file(path: str, where: str) -> list[str]:
    return _read_lines(path, where)


def _load_secret_files(data: dict[str, dict[str, Any]]) -> None:
    for section, key in SECRET_KEYS:
        sect = data.get(section, {})
        file_key = f"{key}_file"
        path = sect.get(file_key)
        if not path or sect.get(key):
            continue
        values = _read_secret_file(str(path), f"{section}.{file_key}")
        if key in ("keys", "secrets"):
            sect[key] = values
        elif values:
            sect[key] = values[0]


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    lock = data.get("origin_lock")
    if isinstance(lock, dict) and lock.get("cloudflare_ranges_file"):
        lock["cloudflare_ranges_file"] = str(base / str(lock["cloudflare_ranges_file"]))


def load_settings(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Settings from ``path`` (or the built-in defaults) plus environment overrides.

    With no file and no signing key anywhere, this is the embedded development default: a local
    sample folder and a development-only signing key.
    """
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    if path is None:
        path = env.get("ORIGINSHIELD_CONFIG") or None
    if path is not None:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"config: cannot read {path} ({exc.strerror})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config: {path} is not valid TOML ({exc})") from None
        for section, key in SECRET_KEYS:
            section_data = data.get(section)
            if isinstance(section_data, dict) and key in section_data:
                raise ConfigError(
                    f"{section}.{key}: secrets are not read from the config file; set "
                    f"{ENV_PREFIX}{section.upper()}__{key.upper()} or {section}.{key}_file"
                )
        if "development" in data:
            raise ConfigError("development: not a config key")
    for section, values in _env_overrides(env).items():
        existing = data.setdefault(section, {})
        if not isinstance(existing, dict):
            raise ConfigError(f"{section}: must be a table")
        existing.update(values)
    _load_secret_files(data)
    _resolve_paths(data, Path(path).parent if path is not None else Path.cwd())
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{loc}: {err['msg']}") from None
    return _finish(settings, from_file=path is not None)


def _finish(settings: Settings, *, from_file: bool) -> Settings:
    if not settings.signing.keys:
        if from_file or settings.origin.kind != "local":
            if settings.signing.required:
                raise ConfigError(
                    "signing.keys: no signing key; set ORIGINSHIELD_SIGNING__KEYS "
                    "(comma-separated) or signing.keys_file"
                )
        else:
            settings = settings.model_copy(
                update={
                    "development": True,
                    "signing": settings.signing.model_copy(
                        update={"keys": [SecretStr(DEV_SIGNING_KEY)]}
                    ),
                }
            )
    if any(len(k.get_secret_value()) < 16 for k in settings.signing.keys):
        raise ConfigError("signing.keys: every key must be at least 16 characters")
    o = settings.origin
    if o.kind == "s3":
        for key in ("endpoint_url", "bucket"):
            if not getattr(o, key):
                raise ConfigError(f"origin.{key}: required when origin.kind = 's3'")
        if (o.access_key_id is None) != (o.secret_access_key is None):
            raise ConfigError(
                "origin.secret_access_key: set both access_key_id and secret_access_key, or neither"
            )
    lock = settings.origin_lock
    if lock.enabled and not lock.secrets and not lock.cloudflare_ips_only:
        raise ConfigError(
            "origin_lock.secrets: the lock needs ORIGINSHIELD_ORIGIN_LOCK__SECRETS "
            "and/or cloudflare_ips_only = true"
        )
    if lock.enabled and lock.cloudflare_ips_only:
        ranges = lock.cloudflare_ranges
        if not ranges:
            if not lock.cloudflare_ranges_file:
                raise ConfigError(
                    "origin_lock.cloudflare_ranges_file: required with cloudflare_ips_only"
                )
            ranges = _read_lines(lock.cloudflare_ranges_file, "origin_lock.cloudflare_ranges_file")
        for item in ranges:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ConfigError(
                    f"origin_lock.cloudflare_ranges: {item!r} is not a network"
                ) from None
        if not ranges:
            raise ConfigError("origin_lock.cloudflare_ranges: the list is empty")
        settings = settings.model_copy(
            update={"origin_lock": lock.model_copy(update={"cloudflare_ranges": ranges})}
        )
    if settings.metrics.port and settings.metrics.port == settings.server.port:
        raise ConfigError("metrics.port: must differ from server.port (0 serves on the main port)")
    return settings


def region_from_endpoint(endpoint_url: str) -> str:
    """``https://s3.us-west-004.backblazeb2.com`` -> ``us-west-004``; B2 needs it for SigV4."""
    host = endpoint_url.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    parts = host.split(".")
    if len(parts) >= 3 and parts[0] == "s3":
        return parts[1]
    return "us-east-1"
