"""`VLLMRealtimeSTT`: streaming speech-to-text over vLLM's ``/v1/realtime`` WebSocket.

The protocol is transcription only and differs from OpenAI's: ``session.update``
names the model at the top level and is never acknowledged; a plain commit STARTS a
generation and ``commit{final: true}`` ends it; audio is base64 PCM16 at 16 kHz;
errors carry a flat string. Audio appended before the previous ``transcription.done``
is dropped by the server, so utterances go strictly one after another.

Reliability: each utterance keeps its audio until ``done``; when the socket drops
(or the server restarts), new connections are tried with a jittered, capped backoff
for up to ``reconnect_window_s`` and the utterance is sent again from its first
sample, so an outage shorter than the window costs time, not words. The audio kept
is bounded (``max_utterance_s``): past it `push` raises `STTOverflowError` and
refuses the frame (nothing accepted is dropped). A reader on every socket answers
the server's pings and our heartbeat detects a silent server, so idle pauses cost
nothing. The worker that serves utterances is supervised: whatever happens, each
utterance ends in its transcript or exactly one typed `STTError`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from typing import Any

import aiohttp

from duplex.agents.audio import AudioFrame
from duplex.agents.backoff import Backoff
from duplex.agents.errors import AudioFormatError, ConfigurationError
from duplex.agents.stages import STT, PartialCallback, STTSession, STTUtterance
from duplex.backends.cascade.chat_completions import api_root
from duplex.backends.cascade.errors import STTError, STTOverflowError

from .link import FATAL_CODES, Anomalies, Dropped, Generation, Link, configuration_error, open_link

logger = logging.getLogger(__name__)

__all__ = ["FATAL_CODES", "SESSION_FIELDS", "VLLMRealtimeSTT", "VLLMRealtimeSTTSession"]

#: ``session.update`` fields besides ``model`` that vLLM builds read (older ones ignore them).
SESSION_FIELDS = frozenset({"language", "prompt"})


class _Cancelled(Exception):
    """The utterance was cancelled while its generation ran."""


class _Utterance(STTUtterance):
    def __init__(self, session: VLLMRealtimeSTTSession, on_partial: PartialCallback | None) -> None:
        self._session = session
        self._on_partial = on_partial
        self.chunks: list[bytes] = []
        self.samples = 0
        self.ended = False  # finish() or cancel() was called
        self.cancelled = False
        self.changed = asyncio.Event()
        self.result: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.text = ""  # deltas received on the current connection
        self._shown = 0  # length of the longest partial handed out (across reconnects)

    async def push(self, frame: AudioFrame) -> None:
        if self.ended:
            raise STTError("audio pushed after the utterance ended", code="stt_utterance_ended")
        if frame.sample_rate != 16000:
            raise AudioFormatError(f"vLLM realtime needs 16000 Hz audio, got {frame.sample_rate}")
        frame = frame.to_mono()
        limit = int(self._session.stt.max_utterance_s * 16000)
        if self.samples + frame.samples_per_channel > limit:
            raise STTOverflowError(
                f"utterance longer than {self._session.stt.max_utterance_s:.0f} s; frame refused"
            )
        self.chunks.append(frame.to_pcm16())
        self.samples += frame.samples_per_channel
        self.changed.set()

    async def finish(self) -> str:
        self.ended = True
        self.changed.set()
        return await asyncio.shield(self.result)

    async def cancel(self) -> None:
        self.cancelled = self.ended = True
        self.changed.set()
        if not self.result.done():
            self.result.cancel()

    def on_text(self, delta: str) -> None:
        """A resent utterance repeats text already shown: report only when it grows past it."""
        self.text += delta
        if len(self.text) > self._shown:
            self._shown = len(self.text)
            if self._on_partial is not None and not self.cancelled:
                try:
                    self._on_partial(self.text)
                except Exception:  # the app's callback must not take the reader down
                    logger.exception("vLLM realtime: partial-transcript callback failed")

    def resolve(self, text: str) -> None:
        if not self.result.done():
            self.result.set_result(text)

    def fail(self, exc: BaseException) -> None:
        if not self.result.done():
            self.result.set_exception(exc)
            self.result.exception()  # the owner may have gone; never warn "never retrieved"


class VLLMRealtimeSTTSession(STTSession):
    """One WebSocket per call, reused across its utterances and rebuilt when it drops."""

    def __init__(self, stt: VLLMRealtimeSTT) -> None:
        self.stt = stt
        self._link: Link | None = None
        self._queue: asyncio.Queue[_Utterance] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._fatal: STTError | None = None
        self._closed = False
        #: Connections rebuilt after a drop or an outage (a measure of link health).
        self.reconnects = 0
        #: Longest outage an utterance survived, in ms (measured from the drop).
        self.last_outage_ms = 0.0
        #: Frames the server sent that could not be used (counted, skipped, warned once).
        self.anomalies = Anomalies()

    async def start(self) -> None:
        """Connect now, so a wrong URL, key or model fails the call setup, not the first turn."""
        try:
            self._link = await self._open()
        except Dropped as e:
            raise STTError(
                f"cannot reach vLLM realtime at {self.stt.ws_url}: {e}", code="stt_unreachable"
            ) from None
        except STTError as e:
            if e.code in ("model_not_found", "invalid_event"):
                raise configuration_error(e, self.stt.model) from None
            raise
        self._worker = asyncio.create_task(self._run(), name="vllm-stt")

    def begin(self, on_partial: PartialCallback | None = None) -> STTUtterance:
        utt = _Utterance(self, on_partial)
        if self._closed:
            utt.fail(STTError("speech-to-text session is closed", code="stt_closed"))
        elif self._fatal is not None:
            utt.fail(self._fatal)
        else:
            self._queue.put_nowait(utt)
        return utt

    # --- connection ---------------------------------------------------------------------
    async def _open(self) -> Link:
        stt = self.stt
        return await open_link(
            stt.http(),
            stt.ws_url,
            headers=stt.headers,
            model=stt.model,
            extra=stt.session_extra,
            heartbeat_s=stt.heartbeat_s,
            timeout=stt.connect_timeout,
            anomalies=self.anomalies,
        )

    async def _drop_link(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            await link.close()

    # --- utterances -----------------------------------------------------------------------
    async def _run(self) -> None:
        """Serves utterances one after another; nothing that happens to one stops the next."""
        while True:
            utt = await self._queue.get()
            if utt.cancelled:
                continue  # dropped before it reached the server
            try:
                await self._serve(utt)
            except asyncio.CancelledError:
                utt.fail(STTError("speech-to-text session closed", code="stt_closed"))
                raise
            except Exception as e:
                logger.error("vLLM realtime: utterance failed unexpectedly: %s", type(e).__name__)
                await self._drop_link()
                utt.fail(STTError(f"internal error: {type(e).__name__}", code="stt_internal"))

    async def _serve(self, utt: _Utterance) -> None:
        outage_at: float | None = None
        delays = Backoff(self.stt.reconnect_initial_delay, self.stt.reconnect_max_delay).delays()
        while not utt.cancelled:
            try:
                if self._link is None or not self._link.alive:
                    await self._drop_link()
                    self._link = await self._open()
                    if outage_at is not None:
                        self.reconnects += 1
                        outage_ms = (time.monotonic() - outage_at) * 1000
                        self.last_outage_ms = max(self.last_outage_ms, outage_ms)
                        logger.info("vLLM realtime back after %.0f ms; resending", outage_ms)
                utt.resolve(await self._transcribe(self._link, utt))
                return
            except _Cancelled:
                await self._drop_link()  # frees the server's generation and our next turn
                return
            except Dropped as e:
                await self._drop_link()
                now = time.monotonic()
                if outage_at is None:
                    outage_at = now
                    logger.warning("vLLM realtime connection lost (%s); retrying", e)
                if now - outage_at >= self.stt.reconnect_window_s:
                    utt.fail(
                        STTError(
                            f"vLLM realtime unreachable for {self.stt.reconnect_window_s:.0f} s: "
                            f"{e}",
                            code="stt_connection_lost",
                        )
                    )
                    return
                await self._pause(utt, next(delays))
            except STTError as e:
                # The server's state for this generation is unknown: start clean next time.
                await self._drop_link()
                if not e.recoverable:
                    self._fatal = e
                utt.fail(e)
                return

    async def _pause(self, utt: _Utterance, delay: float) -> None:
        """Wait before the next attempt; a cancel ends the wait at once."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._until_cancelled(utt), delay)

    async def _transcribe(self, link: Link, utt: _Utterance) -> str:
        utt.text = ""
        gen = Generation(utt.on_text)
        link.generation = gen
        try:
            await link.send({"type": "input_audio_buffer.commit"})  # starts the generation
            sent = 0
            while True:
                utt.changed.clear()
                if utt.cancelled:
                    raise _Cancelled
                while sent < len(utt.chunks):
                    audio = base64.b64encode(utt.chunks[sent]).decode("ascii")
                    await link.send({"type": "input_audio_buffer.append", "audio": audio})
                    sent += 1
                if utt.ended:
                    await link.send({"type": "input_audio_buffer.commit", "final": True})
                    break
                waiter: asyncio.Future[Any] = asyncio.ensure_future(utt.changed.wait())
                await asyncio.wait({waiter, gen.result}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if gen.result.done():
                    break  # the server ended or failed the generation on its own
            text = await self._final(utt, gen)
        finally:
            link.generation = None
        return text or utt.text

    async def _final(self, utt: _Utterance, gen: Generation) -> str:
        """Wait for ``done``; a cancel stops waiting at once."""
        cancelled: asyncio.Future[Any] = asyncio.ensure_future(self._until_cancelled(utt))
        try:
            await asyncio.wait(
                {gen.result, cancelled},
                timeout=self.stt.final_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            cancelled.cancel()
        if gen.result.done():
            return gen.result.result()  # raises Dropped / STTError as the reader set them
        if utt.cancelled:
            raise _Cancelled
        raise STTError("vLLM realtime sent no transcription.done in time", code="stt_timeout")

    @staticmethod
    async def _until_cancelled(utt: _Utterance) -> None:
        while not utt.cancelled:
            utt.changed.clear()
            await utt.changed.wait()

    async def aclose(self) -> None:
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        while not self._queue.empty():
            self._queue.get_nowait().fail(
                STTError("speech-to-text session closed", code="stt_closed")
            )
        await self._drop_link()


class VLLMRealtimeSTT(STT):
    """Configuration shared by every call: server, model, limits, reconnection.

    ``session_extra`` adds ``session.update`` fields from `SESSION_FIELDS` (vLLM builds
    after 0.33 read ``language`` and ``prompt``; 0.33 and older ignore them); it can never
    replace ``model``. An utterance survives an outage of up to ``reconnect_window_s``;
    ``heartbeat_s`` is how often we ping an idle server (None: only answer its pings).
    """

    sample_rate = 16000

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        max_utterance_s: float = 60.0,
        reconnect_window_s: float = 30.0,
        reconnect_initial_delay: float = 0.1,
        reconnect_max_delay: float = 2.0,
        connect_timeout: float = 10.0,
        final_timeout: float = 30.0,
        heartbeat_s: float | None = 20.0,
        session_extra: dict[str, Any] | None = None,
    ) -> None:
        root = api_root(base_url)
        self.ws_url = (
            root.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + "/realtime"
        )
        if not model:
            raise ConfigurationError("VLLMRealtimeSTT needs the model name vLLM serves")
        extra = dict(session_extra or {})
        unknown = set(extra) - SESSION_FIELDS
        if unknown:
            raise ConfigurationError(
                f"session_extra may only set {sorted(SESSION_FIELDS)}, not {sorted(unknown)} "
                "(the model is the `model` argument)"
            )
        for name, value in (
            ("max_utterance_s", max_utterance_s),
            ("connect_timeout", connect_timeout),
            ("final_timeout", final_timeout),
        ):
            if value <= 0:
                raise ConfigurationError(f"{name} must be positive")
        if reconnect_window_s < 0 or (heartbeat_s is not None and heartbeat_s <= 0):
            raise ConfigurationError("reconnect_window_s must be >= 0 and heartbeat_s > 0 or None")
        self.model = model
        self._api_key = api_key
        self.max_utterance_s = max_utterance_s
        self.reconnect_window_s = reconnect_window_s
        self.reconnect_initial_delay = reconnect_initial_delay
        self.reconnect_max_delay = reconnect_max_delay
        self.connect_timeout = connect_timeout
        self.final_timeout = final_timeout
        self.heartbeat_s = heartbeat_s
        self.session_extra = extra
        self._http: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"VLLMRealtimeSTT(url={self.ws_url!r}, model={self.model!r})"

    def http(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout)
            )
        return self._http

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    async def connect(self) -> VLLMRealtimeSTTSession:
        session = VLLMRealtimeSTTSession(self)
        await session.start()
        return session

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
