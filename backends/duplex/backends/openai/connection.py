"""One WebSocket to a realtime server: dial, send with an event_id, receive parsed events.

The connection knows nothing of conversations or responses; the session decides
what a drop means. Dialling with backoff (the shared `Backoff`) lives here too;
aiohttp's heartbeat pings the server so a black-holed socket is noticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from duplex.agents import nowait
from duplex.agents.backoff import Backoff, retryable_status
from duplex.agents.errors import BackendErrorException

from .appends import AppendQueue
from .appends import new_event_id as new_event_id  # re-exported: the ids of every event
from .options import Endpoint, ReconnectPolicy

log = logging.getLogger("duplex.backends.openai")

#: What a malformed frame becomes on the receive side (the session logs and skips it).
MALFORMED = "duplex.malformed"


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
    """An open socket; writes are serialised so events keep their order.

    Caller audio goes through `audio` (an `AppendQueue`): written straight from
    the caller's frame callback when nothing is ahead of it, so the hot path
    needs no task. Other events use `send`, which first empties that queue.
    """

    def __init__(
        self,
        http: aiohttp.ClientSession,
        ws: aiohttp.ClientWebSocketResponse,
        *,
        owns_http: bool = True,
    ) -> None:
        self._http = http
        self._ws = ws
        self._owns_http = owns_http
        self._lock = asyncio.Lock()
        #: A write that had to wait for the socket (flow control), finishing in a task.
        self._inflight: asyncio.Task[None] | None = None
        self.audio = AppendQueue(self)
        self.sent = 0
        self.opened_at = time.monotonic()

    @property
    def closed(self) -> bool:
        return self._ws.closed

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code

    def writable(self) -> bool:
        """A write now goes straight to the socket: none in progress, none waiting."""
        t = self._inflight
        return (t is None or t.done()) and not self._lock.locked()

    def write_nowait(self, data: str) -> None:
        """Write ``data`` now (only when `writable`); raises ConnectionError if closed.

        aiohttp writes an uncompressed frame without awaiting unless the socket's
        buffer is over its limit; then the rest of that write finishes in a task
        and `writable` stays False until it has.
        """
        if self._ws.closed:
            raise ConnectionResetError("realtime socket is closed")
        waiting = nowait.start(self._ws.send_str(data))
        self.sent += 1
        if waiting is None:
            return
        task = asyncio.get_running_loop().create_task(waiting.finish())
        self._inflight = task
        task.add_done_callback(self._write_done)

    def _write_done(self, task: asyncio.Task[None]) -> None:
        if self._inflight is task:
            self._inflight = None
        if not task.cancelled() and task.exception() is not None:
            log.debug("realtime: socket write failed: %s", task.exception())

    async def _settle(self) -> None:
        """Wait for a write that is waiting on the socket (its failure shows on the next write)."""
        while (t := self._inflight) is not None:
            if not t.done():
                with contextlib.suppress(Exception):
                    await asyncio.shield(t)
            if self._inflight is t:
                self._inflight = None

    async def _write_queued(self) -> None:
        """Under the lock: the queued appends, oldest first; one that fails stays queued."""
        await self._settle()
        q = self.audio
        while q.pending:
            group = q.pop_group()
            try:
                if self._ws.closed:
                    raise ConnectionResetError("realtime socket is closed")
                await self._ws.send_str(q.format(group))
            except BaseException:
                q.unpop(group)
                raise
            self.sent += 1

    async def drain_appends(self) -> None:
        """Write the queued appends (when the socket or an event held them back)."""
        async with self._lock:
            await self._write_queued()

    async def send(self, event: dict[str, Any]) -> str:
        """Send ``event``, giving it an ``event_id`` if it has none; returns that id."""
        event_id = event.get("event_id")
        if not isinstance(event_id, str):
            event_id = new_event_id()
            event = {"event_id": event_id, **event}
        await self.send_text(json.dumps(event, separators=(",", ":")))
        return event_id

    async def send_text(self, data: str) -> None:
        """Send one event already serialised, after the queued appends."""
        async with self._lock:
            await self._write_queued()
            if self._ws.closed:
                raise ConnectionResetError("realtime socket is closed")
            await self._ws.send_str(data)
        self.sent += 1

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
        self.audio.close()
        try:
            await self._ws.close()
        finally:
            if self._owns_http:
                await self._http.close()


def _parse(text: str) -> Received:
    try:
        event = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than we parse
        return Received(MALFORMED, {}, text[:200])
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return Received(MALFORMED, {}, text[:200])
    return Received(event["type"][:200], event)


#: HTTP status at the handshake -> error code.
_STATUS_CODES = {401: "invalid_api_key", 403: "forbidden", 404: "not_found", 429: "rate_limited"}


def _error_capture() -> tuple[aiohttp.TraceConfig, list[bytes]]:
    """Keeps the body of a refused handshake, which aiohttp drops before raising.

    Only a session we create carries it; with a shared ``http_session`` the error says
    the status alone.
    """
    bodies: list[bytes] = []

    async def on_end(
        _session: aiohttp.ClientSession, _ctx: Any, params: aiohttp.TraceRequestEndParams
    ) -> None:
        if params.response.status >= 400:
            with contextlib.suppress(Exception):
                bodies.append(await asyncio.wait_for(params.response.content.read(4096), 2.0))

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_end)
    return trace, bodies


def _explain(raw: bytes) -> str:
    """The server's message from an error body: ``error.message`` of JSON, else its start."""
    text = raw.decode("utf-8", "replace").strip()
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        return text[:300]
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        message = err.get("message")
        if isinstance(message, str):
            return message[:300]
    if isinstance(err, str):
        return err[:300]
    return text[:300]


def _dial_headers(endpoint: Endpoint) -> dict[str, str]:
    headers = endpoint.all_headers()
    if endpoint.send_beta_header:
        headers["OpenAI-Beta"] = "realtime=v1"
    return headers


async def open_connection(
    endpoint: Endpoint,
    *,
    timeout: float,
    http: aiohttp.ClientSession | None = None,
    heartbeat: float | None = None,
) -> Connection:
    """Dial ``endpoint``; HTTP 401/403/404 at the handshake are fatal, 429/5xx retryable.

    The raised `ConnectError` chains nothing: aiohttp's exception carries the request
    headers (the API key) and must not be reachable from what the caller logs.
    """
    own = http is None
    trace, bodies = _error_capture()
    session = aiohttp.ClientSession(trace_configs=[trace]) if http is None else http
    status: int | None = None
    failure = ""
    try:
        ws = await asyncio.wait_for(
            session.ws_connect(
                endpoint.url,
                headers=_dial_headers(endpoint),
                max_msg_size=32 * 1024 * 1024,
                heartbeat=heartbeat,
            ),
            timeout,
        )
        return Connection(session, ws, owns_http=own)
    except aiohttp.WSServerHandshakeError as e:
        status = e.status
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
        failure = f"{type(e).__name__}: {_short(e)}"
    # Raised outside the except blocks, so no __context__ leads back to the request.
    try:
        if status is not None:
            retryable = retryable_status(status)
            detail = _explain(bodies[0]) if bodies else ""
            code = _STATUS_CODES.get(status, f"http_{status}")
            message = f"realtime handshake refused: HTTP {status}"
            if detail:
                message += f": {detail}"
            raise ConnectError(message, code=code, fatal=not retryable)
        raise ConnectError(
            f"cannot reach realtime server at {_safe_url(endpoint.url)}: {failure}",
            code="connect_failed",
            fatal=False,
        )
    finally:
        if own:
            await session.close()


def _short(e: BaseException) -> str:
    return str(e)[:200]


def _safe_url(url: str) -> str:
    """The URL without its query (a deployment may put a key there)."""
    return url.split("?", 1)[0]


def backoff_delays(policy: ReconnectPolicy, rng: random.Random | None = None) -> Iterator[float]:
    """Delays before each retry (the shared `Backoff`), ``max_attempts`` of them."""
    backoff = Backoff(policy.initial_delay, policy.max_delay, policy.jitter)
    return itertools.islice(backoff.delays(rng), policy.max_attempts)


async def dial(
    endpoint: Endpoint,
    policy: ReconnectPolicy,
    *,
    timeout: float,
    immediate: bool,
    stop: Callable[[], bool] = lambda: False,
    http: aiohttp.ClientSession | None = None,
    heartbeat: float | None = None,
    first: bool = False,
) -> tuple[Connection, int]:
    """Dial with backoff; returns the connection and the attempt that made it.

    ``immediate`` makes the first attempt at once (first connect, planned rollover).
    ``first`` (a session's first connect) fails fast: an unreachable server is not
    retried, and a server answering 429/5xx is retried only within ``timeout`` overall.
    Raises the last `ConnectError` when a fatal one occurs or the attempts run out.
    """
    last: ConnectError | None = None
    delays = [0.0] if immediate else []
    delays += list(backoff_delays(policy))
    started = time.monotonic()
    for attempt, delay in enumerate(delays, 1):
        if first and attempt > 1:
            left = timeout - (time.monotonic() - started)
            if left <= delay or last is None or last.code == "connect_failed":
                break
            timeout = left - delay
        await asyncio.sleep(delay)
        if stop():
            break
        try:
            conn = await open_connection(endpoint, timeout=timeout, http=http, heartbeat=heartbeat)
            return conn, attempt
        except ConnectError as e:
            last = e
            log.warning("realtime: connection attempt %d failed: %s", attempt, e.code)
            if e.fatal:
                break
    raise last or ConnectError("stopped before connecting", code="closed", fatal=True)
