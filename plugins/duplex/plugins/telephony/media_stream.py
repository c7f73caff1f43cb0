"""`MediaStreamTransport`: a phone call carried by a provider's media WebSocket.

The provider (Twilio, Telnyx; see `dialects`) sends the caller's voice as
base64 G.711 at 8 kHz and plays what we send back from its own buffer. The
agent's audio goes through the core `OutputBuffer` like on every transport; a
pump sends it on and the provider's echoed marks report what was played
(`OutputBuffer.report_played`), so ``buffered_ms`` is audio not yet confirmed
played and ``clear`` withdraws exactly that. Nothing is paced by wall clock.

The server (`PhoneServer`) owns the socket: it feeds each text frame to
`handle_text` and gives the transport a ``send`` callable for frames out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from duplex.agents import g711
from duplex.agents.audio import AudioFrame
from duplex.agents.errors import AudioFormatError, ToolError
from duplex.agents.output_buffer import BufferedAudioOutput
from duplex.agents.phone import (
    DtmfBuffer,
    DtmfCallback,
    dtmf_digit,
    run_dtmf_callback,
)
from duplex.agents.transport import QueuedAudioInput, Transport

from .control import CallControl
from .dialects import (
    Dialect,
    DtmfReceived,
    MarkEchoed,
    MediaReceived,
    MediaStreamProtocolError,
    ProviderError,
    StreamStarted,
    StreamStopped,
)
from .marks import MarkTracker

__all__ = ["MediaStreamOutput", "MediaStreamTransport"]

log = logging.getLogger(__name__)

RATE = 8000
FRAME_MS = 20.0
SendText = Callable[[str], Awaitable[None]]
CloseSocket = Callable[[], Awaitable[object]]


class MediaStreamOutput(BufferedAudioOutput):
    """The agent's voice as 20 ms G.711 ``media`` frames, each followed by a ``mark``.

    The core buffer holds ``max_queued_ms`` not yet sent (``write`` waits beyond
    that); the pump sends while less than ``max_unplayed_ms`` is at the provider
    unconfirmed. Should a provider stop echoing marks, audio counts as played
    ``mark_grace_s`` after its scheduled end, so a lost mark cannot stall the call.
    `pause` stops sending; what the provider already holds still plays (there is
    no pause in the protocols), and the heard position follows its marks.
    """

    def __init__(
        self,
        transport: MediaStreamTransport,
        *,
        max_unplayed_ms: float = 400.0,
        mark_grace_s: float = 2.0,
        max_queued_ms: float = 40.0,
    ) -> None:
        super().__init__(RATE, 1, capacity_ms=max_queued_ms, frame_ms=FRAME_MS, sink_reports=True)
        self._t = transport
        self.marks = MarkTracker()
        self.max_unplayed_ms = max_unplayed_ms
        self.mark_grace_s = mark_grace_s
        self.frames_sent = 0
        self._chunk = round(RATE * FRAME_MS / 1000)
        self._play_until = 0.0  # loop time when everything sent should have played
        self._wake = asyncio.Event()
        self._pump_task: asyncio.Task[None] | None = None

    async def write(self, frame: AudioFrame) -> None:
        if frame.sample_rate != RATE or frame.channels != 1:
            raise AudioFormatError(f"phone audio is {RATE} Hz mono, got {frame.sample_rate} Hz")
        if self._t.closed.is_set():
            return
        if self._pump_task is None:
            self._pump_task = asyncio.get_running_loop().create_task(self._pump())
        await self.buffer.write(frame)
        self._wake.set()

    def clear(self) -> float:
        at_provider = self.buffer.in_flight_ms
        dropped = self.buffer.clear()
        self.marks.clear()
        self._play_until = 0.0
        if at_provider > 0 and not self._t.closed.is_set():
            self._t.send(self._t.dialect.clear())
        self._wake.set()
        return dropped

    def resume(self) -> None:
        super().resume()
        self._wake.set()

    @property
    def played_ms(self) -> float:
        """What the phone confirmed as played (the sink-reported position)."""
        return self.buffer.heard_ms

    def on_mark(self, name: str) -> None:
        """The provider echoed mark ``name``: report its position as heard."""
        position = self.marks.echoed(name)
        if position is not None:
            self.buffer.report_played(position)
            self._wake.set()

    def close(self) -> None:
        """The call ended: nothing more is sent; writers and drain waiters wake."""
        self.buffer.close()
        self.marks.clear()
        task, self._pump_task = self._pump_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _pump(self) -> None:
        """Moves audio from the buffer to the provider while its unconfirmed audio allows."""
        loop = asyncio.get_running_loop()
        buf = self.buffer
        await self._t.started.wait()  # the stream id and the audio's law come with ``start``
        while not self._t.closed.is_set():
            self._wake.clear()
            if self._t.call is not None and buf.in_flight_ms < self.max_unplayed_ms:
                frame = buf.take(self._chunk)
                if frame is not None:
                    self._send(frame, self._t.call, loop.time())
                    continue
            timeout = None
            if buf.in_flight_ms > 0:
                timeout = self._play_until + self.mark_grace_s - loop.time()
                if timeout <= 0:
                    log.warning("marks not echoed in time on %s; counting audio as played", self._t)
                    self.marks.clear()
                    buf.report_played(buf.pulled_ms)
                    continue
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _send(self, frame: AudioFrame, call: StreamStarted, now: float) -> None:
        self._play_until = max(self._play_until, now) + frame.duration_ms / 1000.0
        name = self.marks.sent(self.buffer.pulled_ms)
        self._t.send(self._t.dialect.media(g711.encode(frame, call.law)))
        self._t.send(self._t.dialect.mark(name))
        self.frames_sent += 1


class MediaStreamTransport(Transport):
    """One call's media stream. Also the call's `PhoneLine` (hang up, transfer, keypad)."""

    def __init__(
        self,
        dialect: Dialect,
        send_text: SendText,
        close_socket: CloseSocket,
        *,
        control: CallControl | None = None,
        max_queue_ms: float = 2000.0,
        max_errors: int = 100,
        max_outgoing: int = 512,
        max_unplayed_ms: float = 400.0,
        mark_grace_s: float = 2.0,
    ) -> None:
        super().__init__()
        self.dialect = dialect
        self.control = control
        self._send_text = send_text
        self._close_socket = close_socket
        self.input = QueuedAudioInput(max_queue_ms=max_queue_ms, frame_ms=FRAME_MS)
        self.audio_input = self.input
        self.output = MediaStreamOutput(
            self, max_unplayed_ms=max_unplayed_ms, mark_grace_s=mark_grace_s
        )
        self.audio_output = self.output
        self.dtmf = DtmfBuffer()
        self._dtmf_callbacks: list[DtmfCallback] = []
        #: The call, once the provider's ``start`` frame arrived.
        self.call: StreamStarted | None = None
        self.started = asyncio.Event()
        #: Every bad frame, in order (typed, with a code); the call goes on unless fatal.
        self.errors: list[MediaStreamProtocolError] = []
        self.provider_errors: list[ProviderError] = []
        self.max_errors = max_errors
        self.close_reason: str | None = None
        self.frames_received = 0
        self._outgoing: asyncio.Queue[str | None] = asyncio.Queue(maxsize=max_outgoing)
        self._writer: asyncio.Task[None] | None = None
        self._ending = False

    def __repr__(self) -> str:
        call = self.call.call_id if self.call else "?"
        return f"<MediaStreamTransport {self.dialect.provider} call={call}>"

    # --- feeding from the socket ------------------------------------------------------------
    async def handle_text(self, text: str) -> None:
        """One text frame from the provider. Bad frames are recorded and skipped."""
        try:
            msg: Any = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            self._bad(MediaStreamProtocolError(f"frame is not JSON: {e}", code="bad_json"))
            return
        try:
            event = self.dialect.parse(msg)
        except MediaStreamProtocolError as e:
            self._bad(e)
            if e.fatal:
                await self.aclose(f"protocol_error:{e.code}")
            return
        if event is None:
            return
        if isinstance(event, MediaReceived):
            if self.call is None:
                self._bad(MediaStreamProtocolError("media before start", code="no_start"))
                return
            self.frames_received += 1
            self.input.put(g711.decode(event.payload, self.call.law, RATE))
        elif isinstance(event, MarkEchoed):
            self.output.on_mark(event.name)
        elif isinstance(event, StreamStarted):
            if self.call is not None:
                self._bad(MediaStreamProtocolError("a second start frame", code="duplicate_start"))
                return
            self.call = event
            self.started.set()
        elif isinstance(event, DtmfReceived):
            self._on_digit(event.digit)
        elif isinstance(event, StreamStopped):
            await self.aclose("stream_stopped")
        elif isinstance(event, ProviderError):
            log.warning("%s reported an error: %s", self, event.message)
            self.provider_errors.append(event)

    def handle_binary(self, data: bytes) -> None:
        self._bad(MediaStreamProtocolError("binary frames are not part of the protocol"))

    def _bad(self, error: MediaStreamProtocolError) -> None:
        log.warning("%s: bad frame (%s): %s", self, error.code, error)
        self.errors.append(error)
        del self.errors[: -self.max_errors]
        if len(self.errors) >= self.max_errors and not self._ending:
            # A peer sending nothing but garbage is not a call.
            self._spawn_close("too_many_protocol_errors")

    def _on_digit(self, key: str) -> None:
        try:
            digit = dtmf_digit(key, who=self.call.call_id if self.call else None)
        except ValueError as e:
            self._bad(MediaStreamProtocolError(str(e), code="bad_dtmf"))
            return
        self.dtmf.push(digit)
        for cb in list(self._dtmf_callbacks):
            asyncio.get_running_loop().create_task(run_dtmf_callback(cb, digit))

    def on_dtmf(self, callback: DtmfCallback) -> None:
        """Call ``callback(DtmfDigit)`` for every key the caller presses."""
        self._dtmf_callbacks.append(callback)

    # --- sending ----------------------------------------------------------------------------
    def send(self, frame: dict[str, Any]) -> None:
        """Queue a frame for the provider (sent in order by one writer task)."""
        if self._ending:
            return
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())
        try:
            self._outgoing.put_nowait(json.dumps(frame, separators=(",", ":")))
        except asyncio.QueueFull:
            # The socket is stuck; better to end the call than to buffer without bound.
            self._spawn_close("send_queue_full")

    async def _write_loop(self) -> None:
        while True:
            text = await self._outgoing.get()
            if text is None:
                return
            try:
                await self._send_text(text)
            except (ConnectionError, RuntimeError) as e:
                log.info("%s: the socket went away: %s", self, e)
                self._spawn_close("socket_closed")
                return

    # --- PhoneLine --------------------------------------------------------------------------
    async def wait_for_playout(self) -> None:
        await self.output.wait_drained()

    def phone_line(self) -> MediaStreamTransport:
        return self

    async def end_call(self) -> None:
        """Hang up through the provider's API, then close the stream.

        Without API credentials a Twilio call is still ended by closing the stream:
        Twilio then runs the TwiML after ``<Connect>``, and ours has none.
        """
        call = self._require_call()
        if self.control is not None:
            await self.control.hang_up(call.call_id)
        elif self.dialect.provider != "twilio":
            raise ToolError("hanging up needs the provider's API credentials")
        await self.aclose("agent_hung_up")

    async def transfer_call(self, target: str) -> None:
        call = self._require_call()
        if self.control is None:
            raise ToolError("transferring needs the provider's API credentials")
        await self.control.transfer(call.call_id, target)

    def _require_call(self) -> StreamStarted:
        if self.call is None:
            raise ToolError("the phone call has not started")
        return self.call

    # --- lifecycle --------------------------------------------------------------------------
    def _spawn_close(self, reason: str) -> None:
        asyncio.get_running_loop().create_task(self.aclose(reason))

    async def aclose(self, reason: str = "closed") -> None:
        if self._ending:
            await self.closed.wait()
            return
        self._ending = True
        self.close_reason = self.close_reason or reason
        self.input.close()
        self.output.close()
        writer = self._writer
        if writer is not None and writer is not asyncio.current_task():
            # Let frames already queued (a goodbye's last chunks) go out, briefly.
            with contextlib.suppress(asyncio.QueueFull):
                self._outgoing.put_nowait(None)
            try:
                await asyncio.wait_for(asyncio.shield(writer), 1.0)
            except (asyncio.TimeoutError, Exception):
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await writer
        with contextlib.suppress(Exception):
            await self._close_socket()
        await super().aclose()
        log.info("%s closed (%s)", self, self.close_reason)
