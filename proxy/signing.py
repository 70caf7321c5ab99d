"""Signed URLs: the permanent ``s=`` form and the timed ``verify=`` form.

Pure: no aiohttp, no pyvips, so a web app that renders pages can import it for nothing.

* ``s=<mac>``: ``mac = base64url_nopad(HMAC-SHA256(key, message))`` where the message is the raw
  path and query before ``?s=`` / ``&s=``.
* ``verify=<ts>-<mac>``: byte-compatible with Cloudflare's WAF function ``is_timed_hmac_valid_v0``
  (https://developers.cloudflare.com/ruleset-engine/rules-language/functions/#hmac-validation):
  ``mac = HMAC-SHA256(key, message + ts)``; standard padded base64, percent-encoded, or (the WAF's
  ``s`` flag) url-safe unpadded. Valid while ``now < ts + ttl``.

The token is always the last parameter and covers the exact bytes that precede it, so the
verifier works on the raw request target, never on a decoded or re-encoded query.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes

from proxy.errors import Forbidden

TOKEN_NAMES = ("s", "verify")
_B64_STD = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")

Clock = Callable[[], float]
ParamValue = str | int | float | bool


def _mac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def b64url_nopad(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _as_keys(keys: Iterable[str | bytes]) -> tuple[bytes, ...]:
    out = tuple(k.encode() if isinstance(k, str) else bytes(k) for k in keys)
    if not out or any(not k for k in out):
        raise ValueError("at least one non-empty signing key is required")
    return out


def _format_value(value: ParamValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def build_target(object_key: str, params: Mapping[str, ParamValue]) -> str:
    """Path and query, parameters sorted by name: the exact bytes a token covers."""
    path = "/" + quote(object_key.lstrip("/"), safe="/")
    for name in params:
        if name in TOKEN_NAMES:
            raise ValueError(f"{name!r} is reserved for the token")
    query = "&".join(
        f"{quote(name, safe='')}={quote(_format_value(params[name]), safe='')}"
        for name in sorted(params)
    )
    return f"{path}?{query}" if query else path


def _join(target: str, name: str, token: str) -> str:
    return f"{target}{'&' if '?' in target else '?'}{name}={token}"


class Signer:
    """Builds signed URLs; the first key signs."""

    def __init__(
        self,
        keys: Iterable[str | bytes],
        *,
        base_url: str = "",
        ttl: int | None = None,
        clock: Clock = time.time,
    ) -> None:
        self._key = _as_keys(keys)[0]
        self.base_url = base_url.rstrip("/")
        self.ttl = ttl
        self._clock = clock

    def sign_target(self, target: str) -> str:
        return _join(target, "s", b64url_nopad(_mac(self._key, target.encode())))

    def timed_target(self, target: str, issued_at: int) -> str:
        ts = f"{issued_at:010d}"
        mac = _mac(self._key, (target + ts).encode())
        # The WAF's default encoding: standard base64, padded, percent-encoded.
        encoded = quote(base64.b64encode(mac).decode("ascii"), safe="")
        return _join(target, "verify", f"{ts}-{encoded}")

    def url(self, object_key: str, **params: ParamValue) -> str:
        return self.base_url + self.sign_target(build_target(object_key, params))

    def timed_url(
        self,
        object_key: str,
        *,
        issued_at: int | None = None,
        window: int | None = None,
        **params: ParamValue,
    ) -> str:
        """A ``verify=`` URL. ``window`` floors the issue time to a multiple of that many seconds;
        with ``ttl`` (the origin's ``signing.ttl``) given, a window that would leave a fresh URL
        less than half its life is refused, since pages would link URLs about to expire."""
        ts = int(self._clock() if issued_at is None else issued_at)
        if window and self.ttl is not None and window > self.ttl // 2:
            raise ValueError(f"window {window}s is more than half the token ttl {self.ttl}s")
        if window:
            # Every page rendered in the same window links the same URL, so the edge caches
            # one copy instead of one per visitor.
            ts -= ts % window
        return self.base_url + self.timed_target(build_target(object_key, params), ts)

    def srcset(self, object_key: str, widths: Sequence[int], **params: ParamValue) -> str:
        return ", ".join(f"{self.url(object_key, w=w, **params)} {w}w" for w in widths)

    def picture(
        self,
        object_key: str,
        widths: Sequence[int],
        sizes: str,
        *,
        formats: Sequence[str] = ("avif", "webp"),
        fallback: str = "jpeg",
        alt: str = "",
        **params: ParamValue,
    ) -> str:
        esc = html.escape
        sources = "".join(
            f'<source type="image/{fmt}" sizes="{esc(sizes)}"'
            f' srcset="{esc(self.srcset(object_key, widths, f=fmt, **params))}">'
            for fmt in formats
        )
        fallback_set = self.srcset(object_key, widths, f=fallback, **params)
        src = self.url(object_key, w=max(widths), f=fallback, **params)
        return (
            f"<picture>{sources}"
            f'<img src="{esc(src)}" srcset="{esc(fallback_set)}" sizes="{esc(sizes)}"'
            f' alt="{esc(alt)}" loading="lazy" decoding="async"></picture>'
        )


@dataclass(frozen=True, slots=True)
class Verified:
    """What a valid token proves about a request target."""

    path: str  # raw path, still percent-encoded
    query: str  # raw query without the token
    expires_at: float | None  # None for a permanent ``s=`` token or an unsigned request
    signed: bool


def split_target(raw_target: str) -> tuple[str, str, str | None, str | None]:
    """(path, query before the token, token name, token value), all raw.

    The token must be the last parameter; a token name anywhere else (in any case or encoding)
    is refused so that nobody can smuggle a second token past the edge.
    """
    path, sep, query = raw_target.partition("?")
    if not sep:
        return path, "", None, None
    params = query.split("&")
    last_name, eq, last_value = params[-1].partition("=")
    token_name = last_name if (eq and last_name in TOKEN_NAMES) else None
    body = params[:-1] if token_name else params
    for item in body:
        if _plain_name(item.partition("=")[0]) in TOKEN_NAMES:
            raise Forbidden("token must be the last parameter and appear once")
    if token_name is None:
        if _plain_name(last_name) in TOKEN_NAMES:
            raise Forbidden("malformed token parameter")
        return path, query, None, None
    return path, "&".join(body), token_name, last_value


def _plain_name(raw: str) -> str:
    """A parameter name as a decoder might read it: unescaped, trimmed, lower case."""
    if "%" in raw or not raw.isascii():
        raw = unquote_to_bytes(raw).decode("latin-1")
    return raw.strip().lower()


class Verifier:
    """Checks a raw request target against every active key."""

    def __init__(
        self,
        keys: Iterable[str | bytes],
        *,
        ttl: int,
        required: bool = True,
        max_skew: int = 60,
        clock: Clock = time.time,
    ) -> None:
        self._keys = _as_keys(keys)
        self.ttl = ttl
        self.required = required
        self.max_skew = max_skew
        self._clock = clock

    def verify(self, raw_target: str) -> Verified:
        path, query, name, value = split_target(raw_target)
        if name is None or value is None:
            if self.required:
                raise Forbidden("missing signature")
            return Verified(path, query, None, signed=False)
        message = raw_target[: len(raw_target) - len(value) - len(name) - 2]
        if name == "s":
            self._check_permanent(message, value)
            return Verified(path, query, None, signed=True)
        expires_at = self._check_timed(message, value)
        return Verified(path, query, expires_at, signed=True)

    def _check_permanent(self, message: str, value: str) -> None:
        msg = message.encode()
        ok = False
        for key in self._keys:
            # Every key is tried, so timing does not tell which one matched.
            ok |= hmac.compare_digest(b64url_nopad(_mac(key, msg)).encode(), value.encode())
        if not ok:
            raise Forbidden("invalid signature")

    def _check_timed(self, message: str, value: str) -> float:
        ts, dash, mac_text = value.partition("-")
        if not dash or len(ts) != 10 or not ts.isascii() or not ts.isdigit():
            raise Forbidden("malformed verify token")
        candidate = _decode_mac(mac_text)
        msg = (message + ts).encode()
        ok = False
        for key in self._keys:
            ok |= hmac.compare_digest(_mac(key, msg), candidate)
        if not ok:
            raise Forbidden("invalid signature")
        issued = int(ts)
        now = self._clock()
        if issued > now + self.max_skew:
            raise Forbidden("token issued in the future")
        expires_at = float(issued + self.ttl)
        if now >= expires_at:
            raise Forbidden("token expired")
        return expires_at


def _decode_mac(text: str) -> bytes:
    """The 32 MAC bytes from either WAF encoding; anything else is refused.

    Only ``%XX`` escapes are decoded: a ``+`` stays a ``+`` (a valid base64 character) and a
    space never is one, so ``%20`` or a form-decoded ``+`` cannot stand in for it.
    """
    raw = unquote_to_bytes(text)
    if len(raw) == 44 and raw.endswith(b"=") and all(c in _B64_STD for c in raw):
        decoded = base64.b64decode(raw, validate=True)
        canonical = base64.b64encode(decoded)
    elif len(raw) == 43:
        try:
            decoded = base64.urlsafe_b64decode(raw + b"=")
        except ValueError:
            raise Forbidden("malformed verify token") from None
        canonical = base64.urlsafe_b64encode(decoded).rstrip(b"=")
    else:
        raise Forbidden("malformed verify token")
    # Non-canonical spellings (extra bits in the last character) decode to the same bytes;
    # refusing them keeps one URL per token.
    if canonical != raw or len(decoded) != 32:
        raise Forbidden("malformed verify token")
    return decoded
