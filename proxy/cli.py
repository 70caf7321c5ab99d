"""Command line: ``originshield serve | sign | check-config``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from proxy.settings import ConfigError, Settings, load_settings

log = logging.getLogger("originshield")


def _settings(path: str | None) -> Settings:
    try:
        return load_settings(path)
    except ConfigError as exc:
        print(f"originshield: config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _params(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise SystemExit(f"originshield sign: expected name=value, got {item!r}")
        out[name] = value
    return out


def cmd_sign(args: argparse.Namespace) -> int:
    from proxy.signing import Signer

    settings = _settings(args.config)
    signer = Signer(settings.signing_keys(), base_url=args.base_url)
    params = _params(args.params)
    try:
        if args.timed:
            print(signer.timed_url(args.key, window=args.window, **params))  # type: ignore[arg-type]
        else:
            print(signer.url(args.key, **params))
    except ValueError as exc:
        raise SystemExit(f"originshield sign: {exc}") from None
    return 0


def _development_banner(settings: Settings, host: str, port: int) -> None:
    from proxy import samples
    from proxy.signing import Signer

    keys = samples.generate(Path(settings.origin.root))
    signer = Signer(settings.signing_keys(), base_url=f"http://{host}:{port}")
    examples = [
        signer.url(keys[0], w=400, f="webp"),
        signer.url(keys[0], w=300, h=300, fit="cover", f="avif"),
        signer.url(keys[1], w=400),
        signer.url(keys[2], w=300, f="jpeg"),
        signer.url(keys[3], w=160, f="webp"),
        signer.timed_url(keys[0], w=800, f="auto"),
    ]
    print(
        "originshield: DEVELOPMENT MODE - serving the sample folder "
        f"{Path(settings.origin.root).resolve()} with a development signing key.\n"
        "  The key is public: never use this mode in production "
        "(set ORIGINSHIELD_SIGNING__KEYS and a config file).\n"
        "  Try:",
        *("    " + url for url in examples),
        sep="\n",
        flush=True,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from proxy import app, logs

    settings = _settings(args.config)
    host = args.host or settings.server.host
    port = args.port if args.port is not None else settings.server.port
    workers = args.workers or settings.server.workers
    logs.setup(settings.log.level, settings.log.format)
    if settings.development:
        _development_banner(settings, host, port)
    if workers > 1:
        from proxy.supervisor import run_workers

        return run_workers(workers, args.config, host, port)
    app.run(app.serve(settings, host, port))
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
        from proxy.app import limits_from

        limits_from(settings)
    except (ConfigError, ValueError) as exc:
        print(f"originshield: config error: {exc}", file=sys.stderr)
        return 2
    # SecretStr prints as '**********', so secrets stay masked.
    print(settings.model_dump_json(indent=2, exclude={"development"}))
    return 0


def cmd_healthcheck(args: argparse.Namespace) -> int:
    """GET /healthz on this host; for a container HEALTHCHECK, so no curl is needed."""
    import urllib.error
    import urllib.request

    settings = _settings(args.config)
    host = args.host or settings.server.host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a listen address, not one to bind
        host = "127.0.0.1"
    port = args.port if args.port is not None else settings.server.port
    url = f"http://{host}:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as resp:
            ok = resp.status == 200
    except (OSError, urllib.error.URLError) as exc:
        print(f"originshield: unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


def cmd_probe(args: argparse.Namespace) -> int:
    from proxy import probe

    text, code = probe.run(args.urls, ttl=args.ttl, as_json=args.json)
    print(text)
    return code


CLOUDFLARE_SOURCES = ("https://www.cloudflare.com/ips-v4", "https://www.cloudflare.com/ips-v6")


def cmd_cloudflare_ranges(args: argparse.Namespace) -> int:
    """Fetch Cloudflare's published ranges and write them, one per line, for the origin lock."""
    import ipaddress
    import os
    import tempfile
    import urllib.request

    ranges: list[str] = []
    for url in args.source or CLOUDFLARE_SOURCES:
        if not url.startswith(("https://", "http://")):
            print(f"originshield: not an http(s) URL: {url}", file=sys.stderr)
            return 2
        try:
            with urllib.request.urlopen(url, timeout=20) as resp:  # noqa: S310
                text = resp.read(1_000_000).decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            print(f"originshield: cannot fetch {url}: {exc}", file=sys.stderr)
            return 1
        for line in text.split():
            try:
                ranges.append(str(ipaddress.ip_network(line.strip(), strict=False)))
            except ValueError:
                print(f"originshield: {url} returned {line[:60]!r}, not a range", file=sys.stderr)
                return 1
    if not ranges:
        print("originshield: no ranges received; keeping the current file", file=sys.stderr)
        return 1
    body = "# Cloudflare's published address ranges (https://www.cloudflare.com/ips/).\n"
    body += "".join(f"{r}\n" for r in ranges)
    if args.output == "-":
        sys.stdout.write(body)
        return 0
    target = Path(args.output)
    with tempfile.NamedTemporaryFile("w", dir=target.parent or ".", delete=False) as tmp:
        tmp.write(body)
    os.replace(tmp.name, target)
    print(f"wrote {len(ranges)} ranges to {target}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="originshield", description="Image origin shield: signed URLs, resizing, caching."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--config", help="TOML config file (default: built-in defaults)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument(
        "--workers", type=int, help="processes sharing the port (default: server.workers)"
    )
    serve.set_defaults(func=cmd_serve)
    sign = sub.add_parser("sign", help="print a signed path and query")
    sign.add_argument("--config")
    sign.add_argument("--timed", action="store_true", help="a verify= token instead of s=")
    sign.add_argument("--window", type=int, default=None, help="floor the issue time (seconds)")
    sign.add_argument("--base-url", default="", help="prefix, e.g. https://img.example.com")
    sign.add_argument("key", metavar="OBJECT_KEY")
    sign.add_argument("params", nargs="*", metavar="name=value")
    sign.set_defaults(func=cmd_sign)
    check = sub.add_parser("check-config", help="validate the config and print it, masked")
    check.add_argument("--config")
    check.set_defaults(func=cmd_check_config)
    health = sub.add_parser("healthcheck", help="exit 0 if /healthz answers 200, else 1")
    health.add_argument("--config")
    health.add_argument("--host")
    health.add_argument("--port", type=int)
    health.add_argument("--timeout", type=float, default=3.0)
    health.set_defaults(func=cmd_healthcheck)
    probe = sub.add_parser("probe", help="check that image URLs are served and cached right")
    probe.add_argument("urls", nargs="+", metavar="URL")
    probe.add_argument("--ttl", type=int, default=3600, help="signing.ttl, for verify= URLs")
    probe.add_argument("--json", action="store_true", help="machine-readable output")
    probe.set_defaults(func=cmd_probe)
    ranges = sub.add_parser("cloudflare-ranges", help="refresh Cloudflare's IP ranges file")
    ranges.add_argument("--output", default="config/cloudflare-ips.txt", help="file, or - ")
    ranges.add_argument("--source", action="append", help="URL to read (repeatable)")
    ranges.set_defaults(func=cmd_cloudflare_ranges)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result
