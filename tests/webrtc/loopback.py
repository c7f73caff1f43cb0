"""Loopback-only ICE for tests: no test packet ever targets an address beyond 127.0.0.1.

aioice gathers a host candidate on every interface *except* loopback, and answers
connectivity checks from whatever address they come from; Chromium gathers every
interface too. Patched here, for the test process only: aiortc gathers 127.0.0.1
alone, ignores remote candidates that are not loopback (mDNS names included, so
no multicast lookup is sent), and drops any packet addressed elsewhere (the
peer-reflexive answers to a browser's checks from its other interfaces). Chromium
gets ``--allow-loopback-in-peer-connection`` (tests/webrtc/cdp.py) for a loopback candidate.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from typing import Any

import aioice.ice

#: Packets the patched stack refused to send, by destination (tests assert it stays loopback).
refused: list[tuple[str, int]] = []


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _loopback_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return ["127.0.0.1"] if use_ipv4 else []


def _guard_send(send: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(send)
    def guarded(self: Any, message: Any, addr: tuple[str, int]) -> Any:
        if not is_loopback(addr[0]):
            refused.append(addr)
            return None
        return send(self, message, addr)

    return guarded


def _guard_send_async(send: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(send)
    async def guarded(self: Any, data: bytes, addr: tuple[str, int]) -> None:
        if not is_loopback(addr[0]):
            refused.append(addr)
            return
        await send(self, data, addr)

    return guarded


def _guard_candidates(add: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(add)
    async def guarded(self: Any, candidate: Any) -> None:
        if candidate is not None and not is_loopback(candidate.host):
            return
        await add(self, candidate)

    return guarded


_installed = False


def install() -> None:
    """Patch aioice once for this process (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    aioice.ice.get_host_addresses = _loopback_addresses  # type: ignore[assignment]
    proto = aioice.ice.StunProtocol
    proto.send_stun = _guard_send(proto.send_stun)  # type: ignore[method-assign]
    proto.send_data = _guard_send_async(proto.send_data)  # type: ignore[method-assign]
    conn = aioice.ice.Connection
    conn.add_remote_candidate = _guard_candidates(conn.add_remote_candidate)  # type: ignore[method-assign]
