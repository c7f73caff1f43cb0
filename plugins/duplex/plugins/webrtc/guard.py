"""Who may use the playground server, and how fast: Host/Origin allow-lists, token, rate limits.

The threat is a stranger, not the developer: a web page the developer visits that
POSTs to localhost (cross-site request), a rebinding DNS name that makes the
browser treat our port as the attacker's site, and anyone who can reach a port
bound beyond loopback. docs/security.md states the model; this module enforces it.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = [
    "LOOPBACK_HOSTS",
    "TOKEN_ENV",
    "AccessPolicy",
    "BucketsByKey",
    "RateLimit",
    "TokenBucket",
    "is_loopback",
    "token_from_env",
]

#: Environment variable holding the playground token.
TOKEN_ENV = "DUPLEX_TOKEN"
#: Host names that always mean this machine.
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})


def is_loopback(host: str) -> bool:
    """True for names and addresses that only this machine can reach."""
    host = host.strip("[]").lower()
    if host in LOOPBACK_HOSTS or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def token_from_env() -> str | None:
    value = os.environ.get(TOKEN_ENV, "").strip()
    return value or None


def _hostname(host_header: str) -> str:
    """``example.com:8080`` -> ``example.com``; ``[::1]:80`` -> ``::1``."""
    parsed = urlsplit("//" + host_header)
    return (parsed.hostname or "").lower()


@dataclass(frozen=True)
class AccessPolicy:
    """What the server accepts; built once from the bind address and the options.

    Hosts: loopback names, the bound address, and ``extra_hosts`` (``*``: any).
    When bound to every interface, any IP literal is accepted too: DNS rebinding
    needs a name, never an address. Origins: the page's own origin (same host and
    port as the request) or one of ``extra_origins``; requests without ``Origin``
    (curl, SDKs) are not cross-site and pass.
    """

    bind_host: str
    token: str | None = field(default=None, repr=False)
    extra_hosts: frozenset[str] = frozenset()
    extra_origins: frozenset[str] = frozenset()

    @classmethod
    def build(
        cls,
        bind_host: str,
        *,
        token: str | None = None,
        allowed_hosts: Iterable[str] = (),
        allowed_origins: Iterable[str] = (),
    ) -> AccessPolicy:
        return cls(
            bind_host=bind_host,
            token=token or None,
            extra_hosts=frozenset(h.strip("[]").lower() for h in allowed_hosts),
            extra_origins=frozenset(o.rstrip("/").lower() for o in allowed_origins),
        )

    def __repr__(self) -> str:
        # Never show the token.
        return f"AccessPolicy(bind_host={self.bind_host!r}, token={'set' if self.token else None})"

    def host_allowed(self, host_header: str | None) -> bool:
        if "*" in self.extra_hosts:
            return True
        if not host_header:
            return False
        name = _hostname(host_header)
        if not name:
            return False
        if is_loopback(name) or name in self.extra_hosts:
            return True
        bind = self.bind_host.strip("[]").lower()
        if name == bind:
            return True
        return bind in _WILDCARDS and _is_ip(name)

    def origin_allowed(self, origin: str | None, host_header: str | None, scheme: str) -> bool:
        if origin is None:
            return True
        origin = origin.rstrip("/").lower()
        if origin in self.extra_origins:
            return True
        if origin == "null" or not host_header:
            return False
        return origin == f"{scheme}://{host_header}".lower() and self.host_allowed(host_header)

    def token_ok(self, presented: str | None) -> bool:
        if self.token is None:
            return True
        if not presented:
            return False
        return hmac.compare_digest(presented.encode(), self.token.encode())


@dataclass(frozen=True)
class RateLimit:
    """``burst`` events at once, refilled at ``per_s`` events a second."""

    burst: float
    per_s: float


class TokenBucket:
    """A token bucket; `take` answers whether one more event fits now."""

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self._tokens = float(limit.burst)
        self._at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.limit.burst, self._tokens + (now - self._at) * self.limit.per_s)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class BucketsByKey:
    """One bucket per key (a peer's address), bounded in number."""

    def __init__(self, limit: RateLimit, max_keys: int = 4096) -> None:
        self.limit = limit
        self.max_keys = max_keys
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, key: str) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._buckets.pop(next(iter(self._buckets)))  # the oldest key goes
            bucket = self._buckets[key] = TokenBucket(self.limit)
        return bucket.take()
