"""`VLLMRealtimeSTT`: streaming speech-to-text over vLLM's ``/v1/realtime`` WebSocket.

The protocol is transcription only and differs from OpenAI's: ``session.update``
names the model at the top level and is never acknowledged; a plain commit STARTS a
generation and ``commit{final: true}`` ends it; audio is base64 PCM16 at 16 kHz;
errors carry a flat string. Audio appended before the previous ``transcription.done``
is dropped by the server, so utterances go strictly one after another.

Reliability: each utterance keeps its audio until ``done``; when the socket drops,
a new connection is opened and the utterance is sent again from its first sample,
so a drop costs time, not words. The audio kept is bounded (``max_utterance_s``):
past it `push` raises `STTOverflowError` and refuses the frame (nothing accepted is
dropped, and the utterance still gets its transcript).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from typing import Any

import aiohttp

from duplex.agents.audio import AudioFrame
from duplex.agents.errors import AudioFormatError
from duplex.agents.stages import STT, PartialCallback, STTSession, STTUtterance
from duplex.backends.cascade.chat_completions import api_root
from duplex.backends.cascade.errors import STTError, STTOverflowError

logger = logging.getLogger(__name__)

#: Codes after which retrying the same request cannot help.
FATAL_CODES = frozenset({"model_not_found", "invalid_event", "model_not_validated"})


class _Dropped(Exception):
    """The WebSocket went away; the utterance is resent on a new connection."""


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
                self._on_partial(self.text)

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
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._queue: asyncio.Queue[_Utterance] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._fatal: STTError | None = None
        self._closed = False
        #: Connections opened after the first one (a measure of link health).
        self.reconnects = 0

    async def start(self) -> None:
        """Connect now, so a wrong URL fails the call setup rather than the first turn."""
        await self._connect()
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
    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        stt = self.stt
        try:
            ws = await stt.http().ws_connect(stt.ws_url, headers=stt.headers(), autoping=True)
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
            raise STTError(
                f"cannot reach vLLM realtime at {stt.ws_url}: {type(e).__name__}: {e}",
                code="stt_unreachable",
            ) from e
        try:
            first = await asyncio.wait_for(ws.receive(), stt.connect_timeout)
            event = json.loads(first.data) if first.type == aiohttp.WSMsgType.TEXT else {}
            if event.get("type") != "session.created":
                raise STTError(
                    f"expected session.created, got {first.data!r:.200}", code="stt_protocol"
                )
            update: dict[str, Any] = {"type": "session.update", "model": stt.model}
            update.update(stt.session_extra)
            await ws.send_json(update)  # vLLM answers nothing on success
        except BaseException:
            await ws.close()
            raise
        self._ws = ws
        return ws

    async def _drop_ws(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()

    # --- utterances -----------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            utt = await self._queue.get()
            if utt.cancelled:
                continue  # dropped before it reached the server
            attempt = 0
            while True:
                try:
                    ws = self._ws or await self._connect()
                    utt.resolve(await self._transcribe(ws, utt))
                    break
                except _Dropped as e:
                    await self._drop_ws()
                    attempt += 1
                    if attempt > self.stt.reconnect_attempts:
                        utt.fail(
                            STTError(
                                f"vLLM realtime connection lost: {e}", code="stt_connection_lost"
                            )
                        )
                        break
                    self.reconnects += 1
                    logger.warning("vLLM realtime dropped (%s); resending the utterance", e)
                    await asyncio.sleep(min(2.0, 0.05 * 2**attempt))  # back off, then resend
                except STTError as e:
                    # The server's state for this generation is unknown: start clean next time.
                    await self._drop_ws()
                    if e.code in FATAL_CODES:
                        self._fatal = e
                    if e.code == "stt_unreachable" and attempt < self.stt.reconnect_attempts:
                        attempt += 1
                        await asyncio.sleep(min(2.0, 0.05 * 2**attempt))
                        continue
                    utt.fail(e)
                    break

    async def _transcribe(self, ws: aiohttp.ClientWebSocketResponse, utt: _Utterance) -> str:
        utt.text = ""
        receiver = asyncio.create_task(self._receive(ws, utt))
        try:
            await self._send(ws, {"type": "input_audio_buffer.commit"})  # starts the generation
            sent = 0
            while True:
                utt.changed.clear()
                while sent < len(utt.chunks):
                    audio = base64.b64encode(utt.chunks[sent]).decode("ascii")
                    await self._send(ws, {"type": "input_audio_buffer.append", "audio": audio})
                    sent += 1
                if utt.ended:
                    await self._send(ws, {"type": "input_audio_buffer.commit", "final": True})
                    break
                waiter = asyncio.create_task(utt.changed.wait())
                await asyncio.wait({waiter, receiver}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if receiver.done():
                    break  # the server ended or failed the generation on its own
            return await asyncio.wait_for(asyncio.shield(receiver), self.stt.final_timeout)
        except asyncio.TimeoutError:
            raise STTError(
                "vLLM realtime sent no transcription.done in time", code="stt_timeout"
            ) from None
        finally:
            if not receiver.done():
                receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)

    async def _send(self, ws: aiohttp.ClientWebSocketResponse, event: dict[str, Any]) -> None:
        if ws.closed:
            raise _Dropped("socket closed")
        try:
            await ws.send_str(json.dumps(event))
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as e:
            raise _Dropped(f"{type(e).__name__}: {e}") from e

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse, utt: _Utterance) -> str:
        while True:
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise _Dropped(f"socket {msg.type.name.lower()} ({ws.close_code})")
            try:
                event = json.loads(msg.data)
            except ValueError:
                logger.warning("vLLM realtime sent invalid JSON: %.200s", msg.data)
                continue
            kind = event.get("type")
            if kind == "transcription.delta":
                delta = event.get("delta")
                if isinstance(delta, str) and delta:
                    utt.on_text(delta)
            elif kind == "transcription.done":
                text = event.get("text")
                return text if isinstance(text, str) else utt.text
            elif kind == "error":
                self._on_error(event)
            elif kind not in ("session.created", "session.updated"):
                logger.debug("vLLM realtime: ignoring %s", kind)

    def _on_error(self, event: dict[str, Any]) -> None:
        code = str(event.get("code") or "processing_error")
        err = event.get("error")
        message = err.get("message") if isinstance(err, dict) else err  # flat string in vLLM
        if code in ("unknown_event", "invalid_json"):
            logger.warning("vLLM realtime refused an event: %s (%s)", message, code)
            return
        raise STTError(
            f"vLLM realtime: {message} ({code})", code=code, recoverable=code not in FATAL_CODES
        )

    async def aclose(self) -> None:
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        while not self._queue.empty():
            self._queue.get_nowait().fail(
                STTError("speech-to-text session closed", code="stt_closed")
            )
        await self._drop_ws()


class VLLMRealtimeSTT(STT):
    """Configuration shared by every call: server, model, limits.

    ``session_extra`` is merged into ``session.update`` (newer vLLM accepts ``language``
    and ``prompt``). ``reconnect_attempts`` bounds how often one utterance is resent.
    """

    sample_rate = 16000

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        max_utterance_s: float = 60.0,
        reconnect_attempts: int = 3,
        connect_timeout: float = 10.0,
        final_timeout: float = 30.0,
        session_extra: dict[str, Any] | None = None,
    ) -> None:
        root = api_root(base_url)
        self.ws_url = (
            root.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + "/realtime"
        )
        self.model = model
        self._api_key = api_key
        self.max_utterance_s = max_utterance_s
        self.reconnect_attempts = reconnect_attempts
        self.connect_timeout = connect_timeout
        self.final_timeout = final_timeout
        self.session_extra = dict(session_extra or {})
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
