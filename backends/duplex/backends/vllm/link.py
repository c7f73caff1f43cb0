"""One WebSocket to vLLM's ``/v1/realtime``: handshake, a reader that never stops, one generation.

The reader runs for the socket's whole life, not only during an utterance: aiohttp
answers the server's pings only while something reads, and uvicorn (which serves
vLLM) closes a connection whose pong is 20 s late. Our own heartbeat pings detect a
server that went silent. Every frame is parsed defensively: a frame that is not a
JSON object with a string ``type`` is counted and skipped, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp

from duplex.agents.backoff import retryable_status
from duplex.agents.errors import ConfigurationError
from duplex.backends.cascade.errors import STTError

logger = logging.getLogger("duplex.backends.vllm.realtime_stt")

#: Server error codes after which the same request can never succeed.
FATAL_CODES = frozenset({"model_not_found", "invalid_event", "model_not_validated"})
#: An event type vLLM does not know: it answers ``unknown_event``, which proves that the
#: ``session.update`` before it was accepted (vLLM sends nothing when it is).
PROBE_TYPE = "duplex.probe"
#: Longest text kept from one frame (a transcript delta is a few characters).
MAX_FIELD_CHARS = 1 << 20


_INVALID = object()  # what a frame that is not JSON parses to


class Dropped(Exception):
    """The socket went away (or never came up); the utterance is resent on a new one."""


class Anomalies:
    """Counts frames the client could not use; warns once per kind, then every 1,000th."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def note(self, kind: str, detail: str) -> None:
        self.counts[kind] += 1
        n = self.counts[kind]
        if n == 1 or n % 1000 == 0:
            logger.warning("vLLM realtime: skipped %s (%d so far): %.120s", kind, n, detail)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class Generation:
    """What the reader tells the utterance being transcribed: text deltas, then done or failure."""

    def __init__(self, on_text: Callable[[str], None]) -> None:
        self.on_text = on_text
        self.result: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def finish(self, text: str) -> None:
        if not self.result.done():
            self.result.set_result(text)

    def fail(self, exc: BaseException) -> None:
        if not self.result.done():
            self.result.set_exception(exc)
            self.result.exception()  # retrieved: the owner may have moved on


class Link:
    """An open, configured connection. ``generation`` is the utterance it serves now, if any."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, anomalies: Anomalies) -> None:
        self.ws = ws
        self.anomalies = anomalies
        self.generation: Generation | None = None
        self.opened_at = time.monotonic()
        self._created: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._probe: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._frames = 0
        self.lost: asyncio.Event = asyncio.Event()
        self.lost_reason = ""
        self._reader = asyncio.create_task(self._read(), name="vllm-stt-reader")

    @property
    def alive(self) -> bool:
        return not self.lost.is_set() and not self.ws.closed

    # --- handshake ------------------------------------------------------------------------
    async def handshake(self, model: str, extra: dict[str, Any], timeout: float) -> None:
        """``session.created``, then ``session.update`` + a probe whose refusal proves the model."""
        await asyncio.wait_for(self._handshake(model, extra), timeout)

    async def _handshake(self, model: str, extra: dict[str, Any]) -> None:
        await self._wait(self._created)
        await self.send({**extra, "type": "session.update", "model": model})
        await self.send({"type": PROBE_TYPE})
        await self._wait(self._probe)

    async def _wait(self, fut: asyncio.Future[None]) -> None:
        lost: asyncio.Future[Any] = asyncio.ensure_future(self.lost.wait())
        try:
            await asyncio.wait({fut, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
        if fut.done():
            fut.result()
            return
        raise Dropped(self.lost_reason or "socket closed during the handshake")

    # --- sending --------------------------------------------------------------------------
    async def send(self, event: dict[str, Any]) -> None:
        if not self.alive:
            raise Dropped(self.lost_reason or "socket closed")
        try:
            await self.ws.send_str(json.dumps(event))
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as e:
            raise Dropped(f"{type(e).__name__}: {e}") from None

    # --- reading --------------------------------------------------------------------------
    async def _read(self) -> None:
        reason = "socket closed"
        try:
            while True:
                msg = await self.ws.receive()
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self._frame(msg.data)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    self.anomalies.note("binary frame", f"{len(msg.data)} bytes")
                else:
                    code = self.ws.close_code
                    reason = f"socket {msg.type.name.lower()} ({code})"
                    break
        except asyncio.CancelledError:
            reason = "closed by the client"
            raise
        except Exception as e:  # the reader must end in a reported loss, never silently
            reason = f"reader failed: {type(e).__name__}"
            logger.warning("vLLM realtime: %s", reason)
        finally:
            self._lose(reason)

    def _lose(self, reason: str) -> None:
        if self.lost.is_set():
            return
        self.lost_reason = reason
        self.lost.set()
        exc = Dropped(reason)
        for fut in (self._created, self._probe):
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()
        if self.generation is not None:
            self.generation.fail(exc)

    def _frame(self, data: str) -> None:
        self._frames += 1
        try:
            event = json.loads(data)
        except (ValueError, RecursionError):
            event = _INVALID
            self.anomalies.note("invalid JSON", data)
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            if event is not _INVALID:
                self.anomalies.note("frame that is not an event object", data)
            if not self._created.done():
                self._bad_start(data)
            return
        kind = event["type"]
        if not self._created.done():
            if kind == "session.created":
                self._created.set_result(None)
            else:
                self._bad_start(kind)
            return
        gen = self.generation
        if kind == "transcription.delta":
            delta = event.get("delta")
            if not isinstance(delta, str) or len(delta) > MAX_FIELD_CHARS:
                self.anomalies.note("transcription.delta without a text delta", data)
            elif gen is not None and delta:
                gen.on_text(delta)
        elif kind == "transcription.done":
            text = event.get("text")
            if gen is None:
                logger.debug("vLLM realtime: transcription.done with no generation running")
            elif isinstance(text, str) and len(text) <= MAX_FIELD_CHARS:
                gen.finish(text)
            else:
                self.anomalies.note("transcription.done without text", data)
                gen.finish("")  # the deltas stand in for it (see Utterance.final_text)
        elif kind == "error":
            self._error(event)
        elif kind in ("session.created", "session.updated"):
            pass  # newer vLLM acknowledges session.update; nothing to do
        else:
            self.anomalies.note(f"unknown event {kind[:40]!r}", data)

    def _bad_start(self, what: str) -> None:
        self._created.set_exception(
            STTError(f"expected session.created, got {what!r:.80}", code="stt_protocol")
        )
        self._created.exception()

    def _error(self, event: dict[str, Any]) -> None:
        raw_code = event.get("code")
        err = event.get("error")
        message = err.get("message") if isinstance(err, dict) else err  # flat string in vLLM
        if raw_code is not None and not isinstance(raw_code, str):
            self.anomalies.note("error event with a malformed code", repr(raw_code))
            return
        code = (raw_code or "processing_error")[:64]
        text = message[:500] if isinstance(message, str) else "(no message)"
        if not self._probe.done():
            if code == "unknown_event":
                self._probe.set_result(None)  # the probe's answer: the model was accepted
            elif code in FATAL_CODES:
                self._probe.set_exception(
                    STTError(f"vLLM realtime: {text} ({code})", code=code, recoverable=False)
                )
                self._probe.exception()
            else:
                logger.warning("vLLM realtime error during the handshake: %s (%s)", text, code)
            return
        if code == "unknown_event" and self._probe.exception() is not None:
            return  # the probe's own answer, after the model was refused
        if code in ("unknown_event", "invalid_json"):
            self.anomalies.note(f"error {code}", text)
            return
        gen = self.generation
        if gen is None:
            logger.warning("vLLM realtime error between utterances: %s (%s)", text, code)
            return
        fatal = code in FATAL_CODES
        gen.fail(STTError(f"vLLM realtime: {text} ({code})", code=code, recoverable=not fatal))

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(Exception):
            await self.ws.close()
        await asyncio.gather(self._reader, return_exceptions=True)


async def open_link(
    http: aiohttp.ClientSession,
    url: str,
    *,
    headers: Callable[[], dict[str, str]],
    model: str,
    extra: dict[str, Any],
    heartbeat_s: float | None,
    timeout: float,
    anomalies: Anomalies,
) -> Link:
    """Dial and configure; raises `Dropped` (worth a retry) or a non-retryable `STTError`.

    ``headers`` is called inside the dial, so no frame on the raising path holds the key,
    and errors are raised outside ``except`` blocks so none chains to aiohttp's request.
    """
    status: int | None = None
    failure = ""
    try:
        ws = await asyncio.wait_for(
            http.ws_connect(url, headers=headers(), autoping=True, heartbeat=heartbeat_s), timeout
        )
    except aiohttp.WSServerHandshakeError as e:
        status = e.status
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
        failure = type(e).__name__
    if status is not None:
        raise _refused(status, url)
    if failure:
        raise Dropped(f"cannot reach {url}: {failure}")
    link = Link(ws, anomalies)
    try:
        await link.handshake(model, extra, timeout)
    except asyncio.TimeoutError:
        await link.close()
        raise Dropped("no answer to the handshake in time") from None
    except STTError as e:
        await link.close()
        if e.recoverable:  # e.g. a first frame that is not session.created
            raise Dropped(str(e)) from None
        raise
    except BaseException:
        await link.close()
        raise
    return link


def _refused(status: int, url: str) -> Exception:
    if status in (401, 403):
        return STTError(
            f"vLLM realtime refused the API key (HTTP {status}); check api_key / --api-key",
            code="stt_auth",
            recoverable=False,
        )
    if status == 404:
        return STTError(
            f"vLLM realtime not found at {url} (HTTP 404): the server does not serve "
            "a realtime model there",
            code="stt_not_found",
            recoverable=False,
        )
    if retryable_status(status):
        return Dropped(f"handshake refused: HTTP {status}")
    return STTError(
        f"vLLM realtime refused the connection: HTTP {status}",
        code=f"http_{status}",
        recoverable=False,
    )


def configuration_error(e: STTError, model: str) -> ConfigurationError:
    """A refused model at connect time is a deployment mistake, not a runtime failure."""
    return ConfigurationError(
        f"vLLM realtime does not serve the model {model!r}: {e} "
        "(pass the name `vllm serve` was given, or set DUPLEX_STT_MODEL)"
    )
