"""One WebSocket to a realtime server: dial, send with an event_id, receive parsed events.

The connection knows nothing of conversations or responses; the session decides
what a drop means. Reconnection timing (backoff with jitter) lives here too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from duplex.agents.errors import BackendErrorException

from .options import Endpoint, ReconnectPolicy

log = logging.getLogger("duplex.backends.openai")

#: What a malformed frame becomes on the receive side (the session logs and skips it).
MALFORMED = "duplex.malformed"


def new_event_id() -> str:
    return f"evt_{uuid.uuid4().hex[:24]}"


class ConnectError(BackendErrorException):
    """Dialling failed; ``fatal`` means retrying cannot help (bad key, no quota)."""

    def __init__(self, message: str, *, code: str, fatal: bool) -> None:
        super().__init__(message, code=code, recoverable=not fatal)
        self.fatal = fatal


@dataclass(frozen=True)
class Received:
    """One frame off the socket: a parsed event, or ``MALFORMED`` with the raw text."""

    type: str
    event: dict[str, Any]
    raw: str = ""


class Connection:
    """An open socket; `send` serialises writes so events keep their order."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._http = http
        self._ws = ws
        self._lock = asyncio.Lock()
        self.sent = 0

    @property
    def closed(self) -> bool:
        return self._ws.closed

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code

    async def send(self, event: dict[str, Any]) -> str:
        """Send ``event``, giving it an ``event_id`` if it has none; returns that id."""
        event_id = event.get("event_id")
        if not isinstance(event_id, str):
            event_id = new_event_id()
            event = {"event_id": event_id, **event}
        data = json.dumps(event, separators=(",", ":"))
        async with self._lock:
            if self._ws.closed:
                raise ConnectionResetError("realtime socket is closed")
            await self._ws.send_str(data)
        self.sent += 1
        return event_id

    async def receive(self) -> AsyncIterator[Received]:
        """Events until the socket closes; malformed frames are yielded as ``MALFORMED``."""
        async for msg in self._ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                yield _parse(msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                yield Received(MALFORMED, {}, "<binary frame>")
            elif msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSED):
                break

    async def close(self) -> None:
        try:
            await self._ws.close()
        finally:
            await self._http.close()


def _parse(text: str) -> Received:
    try:
        event = json.loads(text)
    except ValueError:
        return Received(MALFORMED, {}, text[:200])
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return Received(MALFORMED, {}, text[:200])
    return Received(event["type"], event)


async def open_connection(endpoint: Endpoint, *, timeout: float) -> Connection:
    """Dial ``endpoint``; HTTP 401/403 at the handshake are fatal, everything else retryable."""
    headers = endpoint.all_headers()
    if endpoint.send_beta_header:
        headers["OpenAI-Beta"] = "realtime=v1"
    http = aiohttp.ClientSession()
    try:
        ws = await asyncio.wait_for(
            http.ws_connect(endpoint.url, headers=headers, max_msg_size=32 * 1024 * 1024),
            timeout,
        )
    except aiohttp.WSServerHandshakeError as e:
        await http.close()
        fatal = e.status in (401, 403)
        code = {401: "invalid_api_key", 403: "forbidden", 429: "rate_limited"}.get(
            e.status, f"http_{e.status}"
        )
        raise ConnectError(
            f"realtime handshake refused: HTTP {e.status}", code=code, fatal=fatal
        ) from None
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
        await http.close()
        raise ConnectError(
            f"cannot reach realtime server: {type(e).__name__}: {e}",
            code="connect_failed",
            fatal=False,
        ) from None
    return Connection(http, ws)


def backoff_delays(policy: ReconnectPolicy, rng: random.Random | None = None) -> Iterator[float]:
    """Delays before each retry: doubling from ``initial_delay`` up to ``max_delay``, jittered."""
    rng = rng or random.Random()
    delay = policy.initial_delay
    for _ in range(policy.max_attempts):
        spread = delay * policy.jitter
        yield max(0.0, delay - spread + rng.random() * 2 * spread)
        delay = min(policy.max_delay, delay * 2 if delay else policy.initial_delay)


async def dial(
    endpoint: Endpoint,
    policy: ReconnectPolicy,
    *,
    timeout: float,
    immediate: bool,
    stop: Callable[[], bool] = lambda: False,
) -> tuple[Connection, int]:
    """Dial with backoff; returns the connection and the attempt that made it.

    ``immediate`` makes the first attempt at once (first connect, planned rollover).
    Raises the last `ConnectError` when a fatal one occurs or the attempts run out.
    """
    last: ConnectError | None = None
    delays = [0.0] if immediate else []
    delays += list(backoff_delays(policy))
    for attempt, delay in enumerate(delays, 1):
        await asyncio.sleep(delay)
        if stop():
            break
        try:
            return await open_connection(endpoint, timeout=timeout), attempt
        except ConnectError as e:
            last = e
            log.warning("realtime: connection attempt %d failed: %s", attempt, e.code)
            if e.fatal:
                break
    raise last or ConnectError("stopped before connecting", code="closed", fatal=True)
