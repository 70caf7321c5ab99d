"""Origin lock: only requests that came through Cloudflare reach the image route. Pure.

Two independent checks, either or both: a shared secret header that a Cloudflare Transform Rule
adds (two values accepted so the secret rotates without downtime), and the TCP peer being in
Cloudflare's published ranges (https://www.cloudflare.com/ips/). Only a request that passed is
trusted for ``CF-Connecting-IP``.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(lines: Iterable[str]) -> list[Network]:
    out: list[Network] = []
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if line:
            out.append(ipaddress.ip_network(line, strict=False))
    return out


class OriginLock:
    def __init__(
        self,
        *,
        header: str | None,
        secrets: Sequence[str],
        networks: Sequence[Network] | None,
    ) -> None:
        self.header = header if secrets else None
        self._secrets = tuple(s.encode() for s in secrets)
        self._networks = tuple(networks) if networks is not None else None

    def _peer_allowed(self, peer: str | None) -> bool:
        if self._networks is None:
            return True
        if peer is None:
            return False
        try:
            addr = ipaddress.ip_address(peer)
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self._networks)

    def _secret_ok(self, value: str | None) -> bool:
        if self.header is None:
            return True
        if value is None:
            return False
        given = value.encode()
        ok = False
        for secret in self._secrets:
            ok |= hmac.compare_digest(given, secret)
        return ok

    def admits(self, peer: str | None, header_value: str | None) -> bool:
        return self._secret_ok(header_value) and self._peer_allowed(peer)

    @staticmethod
    def client_ip(cf_connecting_ip: str | None, peer: str | None) -> str | None:
        """The visitor's address; call only for an admitted request."""
        if cf_connecting_ip:
            try:
                return str(ipaddress.ip_address(cf_connecting_ip.strip()))
            except ValueError:
                return peer
        return peer
