"""`MediaStreamTransport`: a phone call carried by a provider's media WebSocket.

The provider (Twilio, Telnyx; see `dialects`) sends the caller's voice as
base64 G.711 at 8 kHz and plays what we send back from its own buffer. The
transport never paces by wall clock: back-pressure comes from the marks the
provider echoes once audio was played (`MarkTracker`), so ``buffered_ms`` is
audio sent but not confirmed played and ``clear`` withdraws exactly that.

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
from duplex.agents.phone import (
    DtmfBuffer,
    DtmfCallback,
    dtmf_digit,
    run_dtmf_callback,
)
from duplex.agents.transport import AudioOutput, QueuedAudioInput, Transport

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


class MediaStreamOutput(AudioOutput):
    """The agent's voice as 20 ms G.711 ``media`` frames, each followed by a ``mark``.

    ``write`` waits while more than ``max_unplayed_ms`` are sent but not echoed.
    Should a provider stop echoing marks, audio counts as played ``mark_grace_s``
    after its scheduled end, so a lost mark cannot stall the call.
    """

    sample_rate = RATE
    channels = 1
    frame_ms = FRAME_MS

    def __init__(
        self,
        transport: MediaStreamTransport,
        *,
        max_unplayed_ms: float = 400.0,
        mark_grace_s: float = 2.0,
    ) -> None:
        self._t = transport
        self.marks = MarkTracker()
        self.max_unplayed_ms = max_unplayed_ms
        self.mark_grace_s = mark_grace_s
        self._generation = 0
        self._play_until = 0.0  # loop time when everything sent should have played
        self.frames_sent = 0

    async def write(self, frame: AudioFrame) -> None:
        if frame.sample_rate != RATE or frame.channels != 1:
            raise AudioFormatError(f"phone audio is {RATE} Hz mono, got {frame.sample_rate} Hz")
        generation = self._generation
        while self.marks.unplayed_ms >= self.max_unplayed_ms and not self._t.closed.is_set():
            await self._wait_marks(lambda: self.marks.unplayed_ms < self.max_unplayed_ms)
            if generation != self._generation:
                return  # cleared while waiting: this frame belongs to the interrupted reply
        if self._t.closed.is_set() or self._t.call is None:
            return
        payload = g711.encode(frame, self._t.call.law)
        loop = asyncio.get_running_loop()
        self._play_until = max(self._play_until, loop.time()) + frame.duration_ms / 1000.0
        name = self.marks.sent(frame.duration_ms)
        self._t.send(self._t.dialect.media(payload))
        self._t.send(self._t.dialect.mark(name))
        self.frames_sent += 1

    def clear(self) -> float:
        dropped = self.marks.clear()
        self._generation += 1
        self._play_until = 0.0
        if dropped > 0 and not self._t.closed.is_set():
            self._t.send(self._t.dialect.clear())
        return dropped

    @property
    def buffered_ms(self) -> float:
        return self.marks.unplayed_ms

    @property
    def played_ms(self) -> float:
        """What the phone confirmed as played (the sink-reported position)."""
        return self.marks.played_ms

    async def wait_drained(self) -> None:
        while self.marks.pending_marks and not self._t.closed.is_set():
            await self._wait_marks(lambda: self.marks.pending_marks == 0)

    async def _wait_marks(self, done: Callable[[], bool]) -> None:
        loop = asyncio.get_running_loop()
        deadline = max(self._play_until, loop.time()) + self.mark_grace_s
        while not done() and not self._t.closed.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                log.warning("marks not echoed in time on %s; counting audio as played", self._t)
                self.marks.confirm_all()
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._t.wait_activity(self.marks), remaining)


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
            self.output.marks.echoed(event.name)
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

    async def wait_activity(self, tracker: MarkTracker) -> None:
        """Until a mark echo, a clear, or the end of the call."""
        waiter = asyncio.ensure_future(tracker.wait_changed())
        closed = asyncio.ensure_future(self.closed.wait())
        try:
            await asyncio.wait({waiter, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            closed.cancel()

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
