"""Response header policy and the 304 decision. Pure.

``Cache-Control`` is for browsers, ``Cloudflare-CDN-Cache-Control`` for the edge (it wins at
Cloudflare and is not forwarded). ``s-maxage`` and ``must-revalidate`` would switch off
Cloudflare's stale-while-revalidate, so the policy uses ``max-age`` with ``stale-*`` directives.
A response to a timed token never outlives the token.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import math
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime

CDN_CACHE_CONTROL = "Cloudflare-CDN-Cache-Control"
NO_STORE = "no-store"


@dataclass(frozen=True, slots=True)
class CachePolicy:
    browser_ttl: int = 86400
    edge_ttl: int = 30 * 86400
    stale_while_revalidate: int = 86400
    stale_if_error: int = 7 * 86400
    versioned_ttl: int = 365 * 86400
    not_found_ttl: int = 60


def etag(source_etag: str, canonical: str, variant: str) -> str:
    """A strong ETag every replica computes alike, without hashing the output.

    The output is a function of the source bytes (named by their ETag), the canonical options
    and the negotiated variant, so these three identify it.
    """
    digest = hashlib.sha256(f"{source_etag}\0{canonical}\0{variant}".encode()).digest()
    return '"' + base64.urlsafe_b64encode(digest[:18]).decode("ascii") + '"'


@functools.lru_cache(maxsize=4096)
def http_date(timestamp: float) -> str:
    # Memoised: the same Last-Modified is formatted for every render of a source.
    return formatdate(timestamp, usegmt=True)


def cache_tag(object_key_raw: str) -> str:
    """The source object as a Cloudflare Cache-Tag, so one purge drops all its variants."""
    tag = object_key_raw.replace(",", "%2C")
    if len(tag) > 1024:
        tag = "sha256-" + hashlib.sha256(tag.encode()).hexdigest()
    return tag


def cache_control(
    policy: CachePolicy, *, versioned: bool, expires_at: float | None, now: float
) -> tuple[str, str]:
    """(browser, edge) values for a successful image response."""
    if expires_at is not None:
        # Stale directives would let a cache serve the image after the token died.
        remaining = max(0, math.floor(expires_at - now))
        browser = min(policy.browser_ttl, remaining)
        edge = min(policy.edge_ttl, remaining)
        return f"public, max-age={browser}", f"max-age={edge}"
    if versioned:
        value = f"public, max-age={policy.versioned_ttl}, immutable"
        return value, f"max-age={policy.versioned_ttl}"
    stale = (
        f"stale-while-revalidate={policy.stale_while_revalidate}, "
        f"stale-if-error={policy.stale_if_error}"
    )
    return (
        f"public, max-age={policy.browser_ttl}, {stale}",
        f"max-age={policy.edge_ttl}, {stale}",
    )


def error_cache_control(status: int, policy: CachePolicy) -> tuple[str, str | None]:
    """A 404 is kept briefly to shield the bucket from 404 floods; no other error is kept."""
    if status == 404 and policy.not_found_ttl:
        value = f"public, max-age={policy.not_found_ttl}"
        return value, f"max-age={policy.not_found_ttl}"
    return NO_STORE, NO_STORE


def _etag_matches(header: str, current: str) -> bool:
    if header.strip() == "*":
        return True
    opaque = current.removeprefix("W/")
    # If-None-Match uses the weak comparison (RFC 9110 13.1.2).
    return any(item.strip().removeprefix("W/") == opaque for item in header.split(","))


def not_modified(
    *,
    if_none_match: str | None,
    if_modified_since: str | None,
    etag_value: str,
    last_modified: float | None,
) -> bool:
    if if_none_match is not None:
        return _etag_matches(if_none_match, etag_value)
    if if_modified_since and last_modified is not None:
        try:
            since = parsedate_to_datetime(if_modified_since).timestamp()
        except (TypeError, ValueError):
            return False
        return math.floor(last_modified) <= since
    return False
