"""``originshield probe URL...``: is an image URL served and cached the way it should be?

Fetches each URL twice plus a conditional request and reports one line per check, OK, WARN or
FAIL. Works against originshield directly or through Cloudflare (where ``CF-Cache-Status`` should
go from MISS to HIT). Standard library only, so it runs anywhere the package is installed.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from email.message import Message
from urllib.parse import parse_qsl, urlsplit

OK, WARN, FAIL = "OK", "WARN", "FAIL"
CACHED = frozenset({"HIT", "REVALIDATED", "UPDATING", "STALE"})


@dataclass(frozen=True)
class Check:
    url: str
    check: str
    result: str
    detail: str


@dataclass(frozen=True)
class Fetched:
    status: int
    headers: Message
    size: int
    seconds: float


def fetch(url: str, headers: dict[str, str] | None = None, timeout: float = 20) -> Fetched:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310
            body = resp.read()
            return Fetched(resp.status, resp.headers, len(body), time.monotonic() - started)
    except urllib.error.HTTPError as err:
        body = err.read()
        return Fetched(err.code, err.headers, len(body), time.monotonic() - started)


def _max_age(value: str | None) -> int | None:
    if not value:
        return None
    m = re.search(r"(?:^|[\s,])max-age=(\d+)", value)
    return int(m.group(1)) if m else None


def _token_expiry(url: str, ttl: int) -> float | None:
    query = urlsplit(url).query
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "verify":
            ts = value.split("-", 1)[0]
            if ts.isdigit():
                return int(ts) + ttl
    return None


def probe(url: str, *, ttl: int = 3600, accept: str = "image/avif,image/webp,*/*") -> list[Check]:
    checks: list[Check] = []

    def add(name: str, result: str, detail: str) -> None:
        checks.append(Check(url, name, result, detail))

    try:
        first = fetch(url, {"Accept": accept})
    except (OSError, urllib.error.URLError) as exc:
        add("fetch", FAIL, f"no answer: {exc}")
        return checks
    h = first.headers
    ctype = h.get("Content-Type", "")
    if first.status == 200 and ctype.startswith("image/"):
        add("status", OK, f"200 {ctype}, {first.size} bytes in {first.seconds * 1000:.0f} ms")
    else:
        add("status", FAIL, f"{first.status} {ctype}")
        return checks

    browser = h.get("Cache-Control")
    edge = h.get("Cloudflare-CDN-Cache-Control")
    if _max_age(browser) is None:
        add("cache-control", FAIL, f"no max-age for browsers: {browser!r}")
    else:
        add("cache-control", OK, f"browser: {browser}")
    if edge is not None:
        add("edge-cache-control", OK, f"edge: {edge}")
    else:
        add(
            "edge-cache-control",
            WARN,
            "Cloudflare-CDN-Cache-Control not visible (Cloudflare removes it; expected there)",
        )
    if browser and ("s-maxage" in browser or "must-revalidate" in browser):
        add("stale", WARN, "s-maxage/must-revalidate switch off Cloudflare's stale serving")

    expires = _token_expiry(url, ttl)
    if expires is not None:
        remaining = expires - time.time()
        longest = max(a for a in (_max_age(browser), _max_age(edge), 0) if a is not None)
        if remaining <= 0:
            add("token", FAIL, "the verify= token has expired")
        elif longest > remaining + 1:
            add("token", FAIL, f"cacheable for {longest}s but the token dies in {remaining:.0f}s")
        else:
            add("token", OK, f"cacheable {longest}s, token valid {remaining:.0f}s more")

    etag = h.get("ETag")
    if not etag:
        add("etag", FAIL, "no ETag")
    else:
        again = fetch(url, {"Accept": accept, "If-None-Match": etag})
        if again.status == 304:
            add("etag", OK, f"{etag} revalidates with 304")
        else:
            add("etag", FAIL, f"If-None-Match {etag} answered {again.status}, not 304")

    vary = h.get("Vary", "")
    auto = any(n == "f" and v == "auto" for n, v in parse_qsl(urlsplit(url).query))
    if auto and "accept" not in vary.lower():
        add("vary", FAIL, "f=auto without Vary: Accept")
    elif not auto and "accept" in vary.lower():
        add("vary", WARN, "Vary: Accept on a URL with a fixed format splits the cache")
    else:
        add("vary", OK, f"Vary: {vary or '(none)'}")

    second = fetch(url, {"Accept": accept})
    s1, s2 = h.get("CF-Cache-Status"), second.headers.get("CF-Cache-Status")
    age = second.headers.get("Age")
    if s1 is None and s2 is None:
        add("edge", WARN, "no CF-Cache-Status: not behind Cloudflare (or a direct origin URL)")
    elif s2 == "DYNAMIC":
        add("edge", FAIL, "CF-Cache-Status DYNAMIC: Cloudflare does not cache this (Cache Rule?)")
    elif s2 in CACHED:
        add("edge", OK, f"CF-Cache-Status {s1} then {s2}, Age {age}")
    else:
        add("edge", WARN, f"CF-Cache-Status {s1} then {s2}: expected a HIT the second time")
    return checks


def run(urls: Sequence[str], *, ttl: int, as_json: bool) -> tuple[str, int]:
    checks = [c for url in urls for c in probe(url, ttl=ttl)]
    failed = any(c.result == FAIL for c in checks)
    if as_json:
        text = json.dumps([asdict(c) for c in checks], indent=2)
    else:
        text = "\n".join(f"{c.result:<4} {c.check:<18} {c.detail}  [{c.url}]" for c in checks)
    return text, 1 if failed else 0
