"""`SIPTransport`: one SIP call answered by the agent, its audio through PJSIP's bridge.

PJSIP decodes the caller's RTP (after its jitter buffer) into 20 ms PCM
frames of the bridge and pulls the agent's audio at the same pace from a
media port. That pull is the sink's clock: ``played_ms`` is what PJSIP took
to encode and send, so ``buffered_ms`` (written, not yet pulled) is what an
interruption drops. Frames cross between PJSIP's media thread and asyncio
through a lock-guarded byte buffer and ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import threading
from typing import Any

from duplex.agents.audio import AudioFrame
from duplex.agents.errors import AudioFormatError, ToolError
from duplex.agents.phone import (
    DtmfBuffer,
    DtmfCallback,
    dtmf_digit,
    run_dtmf_callback,
)
from duplex.agents.transport import AudioOutput, QueuedAudioInput, Transport

from .sip_endpoint import BRIDGE_RATE, SipEndpoint, SipEndpointError, pj

__all__ = ["SIPTransport", "SipAudioOutput", "SipCall"]

log = logging.getLogger(__name__)

FRAME_MS = 20
FRAME_BYTES = BRIDGE_RATE * FRAME_MS // 1000 * 2


def _vector_bytes_slow(vec: Any) -> bytes:
    return bytes(vec)


def _vector_bytes_fast(vec: Any) -> bytes:
    """A ``std::vector<unsigned char>`` (SWIG ``ByteVector``) as bytes, without a Python loop.

    SWIG's element-wise conversion costs ~1 ms per 20 ms frame; libstdc++ keeps the
    data pointer first in the vector, so one ``string_at`` copies it. `_vector_bytes`
    checks this against the slow path once before trusting it.
    """
    begin = ctypes.c_void_p.from_address(int(vec.this)).value
    return ctypes.string_at(begin, vec.size()) if begin else b""


def _pick_vector_reader() -> Any:
    probe = pj.ByteVector(bytes(range(256)))
    try:
        if _vector_bytes_fast(probe) == _vector_bytes_slow(probe):
            return _vector_bytes_fast
    except (ValueError, TypeError, OSError):
        pass
    log.warning("reading PJSIP frames the slow way (unexpected vector layout)")
    return _vector_bytes_slow


_vector_bytes = _pick_vector_reader()


class SipAudioOutput(AudioOutput):
    """The agent's voice, pulled 20 ms at a time by PJSIP's conference bridge."""

    sample_rate = BRIDGE_RATE
    channels = 1
    frame_ms = float(FRAME_MS)

    def __init__(self, transport: SIPTransport, *, max_buffer_ms: float = 100.0) -> None:
        self._t = transport
        self._lock = threading.Lock()
        self._buf = bytearray()
        self._capacity = int(max_buffer_ms * BRIDGE_RATE / 1000) * 2
        self._space = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._generation = 0
        self._pulled = 0  # bytes of written audio PJSIP took (sink-reported position)

    async def write(self, frame: AudioFrame) -> None:
        if frame.sample_rate != BRIDGE_RATE or frame.channels != 1:
            raise AudioFormatError(f"SIP output takes {BRIDGE_RATE} Hz mono audio")
        pcm = frame.to_pcm16()
        generation = self._generation
        while self.buffered_bytes >= self._capacity and not self._t.closed.is_set():
            self._space.clear()
            await self._space.wait()
            if generation != self._generation:
                return
        if self._t.closed.is_set():
            return
        with self._lock:
            self._buf += pcm
        self._drained.clear()

    def clear(self) -> float:
        with self._lock:
            dropped = len(self._buf)
            self._buf.clear()
        self._generation += 1
        self._space.set()
        self._drained.set()
        return 1000.0 * dropped / 2 / BRIDGE_RATE

    @property
    def buffered_bytes(self) -> int:
        with self._lock:
            return len(self._buf)

    @property
    def buffered_ms(self) -> float:
        return 1000.0 * self.buffered_bytes / 2 / BRIDGE_RATE

    @property
    def played_ms(self) -> float:
        """Milliseconds of agent audio PJSIP pulled to encode and send."""
        return 1000.0 * self._pulled / 2 / BRIDGE_RATE

    async def wait_drained(self) -> None:
        while self.buffered_bytes and not self._t.closed.is_set():
            self._drained.clear()
            await self._drained.wait()

    # --- PJSIP's media thread ----------------------------------------------------------------
    def pull(self) -> bytes:
        with self._lock:
            chunk = bytes(self._buf[:FRAME_BYTES])
            del self._buf[:FRAME_BYTES]
            left = len(self._buf)
        if chunk:
            self._pulled += len(chunk)
            self._t.endpoint.to_loop(self._on_pulled, left)
        return chunk + bytes(FRAME_BYTES - len(chunk))

    def _on_pulled(self, left: int) -> None:
        if left < self._capacity:
            self._space.set()
        if left == 0:
            self._drained.set()

    def wake(self) -> None:
        self._space.set()
        self._drained.set()


class _MediaPort(pj.AudioMediaPort):  # type: ignore[misc]
    """Bridges PJSIP's frames to the transport (called on PJSIP's media clock thread)."""

    def __init__(self, transport: SIPTransport) -> None:
        super().__init__()
        self._t = transport

    def onFrameRequested(self, frame: Any) -> None:
        frame.type = pj.PJMEDIA_FRAME_TYPE_AUDIO
        frame.buf = pj.ByteVector(self._t.output.pull())
        frame.size = FRAME_BYTES

    def onFrameReceived(self, frame: Any) -> None:
        if frame.type != pj.PJMEDIA_FRAME_TYPE_AUDIO or frame.size <= 0:
            return
        pcm = _vector_bytes(frame.buf)
        if len(pcm) >= 2:
            self._t.endpoint.to_loop(self._t._on_audio, pcm)


class SipCall(pj.Call):  # type: ignore[misc]
    """PJSIP's view of the call; every callback hops to the transport on the asyncio loop."""

    def __init__(self, account: Any, call_id: int, transport: SIPTransport) -> None:
        super().__init__(account, call_id)
        self.transport = transport
        self.port: _MediaPort | None = None

    def onCallState(self, prm: Any) -> None:
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            reason = f"{info.lastStatusCode} {info.lastReason}".strip()
            self.transport.endpoint.to_loop(self.transport._on_disconnected, reason)
        elif info.state == pj.PJSIP_INV_STATE_CONFIRMED:
            self.transport.endpoint.to_loop(self.transport._on_confirmed)

    def onCallMediaState(self, prm: Any) -> None:
        info = self.getInfo()
        for i, media in enumerate(info.media):
            if media.type != pj.PJMEDIA_TYPE_AUDIO or media.status != pj.PJSUA_CALL_MEDIA_ACTIVE:
                continue
            audio = self.getAudioMedia(i)
            if self.port is None:
                self.port = _MediaPort(self.transport)
                fmt = pj.MediaFormatAudio()
                fmt.init(pj.PJMEDIA_FORMAT_PCM, BRIDGE_RATE, 1, FRAME_MS * 1000, 16)
                self.port.createPort(f"duplex-{info.id}", fmt)
            audio.startTransmit(self.port)
            self.port.startTransmit(audio)
            stream = self.getStreamInfo(i)
            codec = f"{stream.codecName}/{stream.codecClockRate}"
            self.transport.endpoint.to_loop(self.transport._on_media, codec)

    def onDtmfDigit(self, prm: Any) -> None:
        method = "sip_info" if prm.method == pj.PJSUA_DTMF_METHOD_SIP_INFO else "rfc4733"
        self.transport.endpoint.to_loop(self.transport._on_digit, str(prm.digit), method)

    def onCallTransferStatus(self, prm: Any) -> None:
        self.transport.endpoint.to_loop(
            self.transport._on_transfer_status, int(prm.statusCode), bool(prm.finalNotify)
        )


class SIPTransport(Transport):
    """A SIP call to the agent. Also its `PhoneLine`: BYE, REFER and the keypad."""

    def __init__(
        self,
        endpoint: SipEndpoint,
        *,
        remote_uri: str = "",
        call_id: str = "",
        max_queue_ms: float = 2000.0,
        max_buffer_ms: float = 100.0,
    ) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.remote_uri = remote_uri
        self.call_id = call_id
        self.input = QueuedAudioInput(max_queue_ms=max_queue_ms, frame_ms=FRAME_MS)
        self.audio_input = self.input
        self.output = SipAudioOutput(self, max_buffer_ms=max_buffer_ms)
        self.audio_output = self.output
        self.dtmf = DtmfBuffer()
        self.dtmf_methods: list[str] = []
        self._dtmf_callbacks: list[DtmfCallback] = []
        #: The negotiated codec, e.g. ``PCMU/8000``, once media is up.
        self.codec: str | None = None
        self.media_ready = asyncio.Event()
        self.close_reason: str | None = None
        self.frames_received = 0
        self.call: SipCall | None = None
        self._transfer: asyncio.Future[int] | None = None
        self._closing = False

    def __repr__(self) -> str:
        return f"<SIPTransport {self.remote_uri or '?'} codec={self.codec}>"

    # --- events from PJSIP (already on the loop) ---------------------------------------------
    def _on_audio(self, pcm: bytes) -> None:
        if len(pcm) % 2:
            pcm = pcm[:-1]
        self.frames_received += 1
        self.input.put(AudioFrame.from_pcm16(pcm, BRIDGE_RATE, 1))

    def _on_media(self, codec: str) -> None:
        self.codec = codec
        self.media_ready.set()

    def _on_confirmed(self) -> None:
        log.info("%s: call established", self)

    def _on_digit(self, key: str, method: str) -> None:
        try:
            digit = dtmf_digit(key, who=self.remote_uri or None)
        except ValueError:
            log.warning("%s: ignored an unknown DTMF key %r", self, key)
            return
        self.dtmf_methods.append(method)
        self.dtmf.push(digit)
        for cb in list(self._dtmf_callbacks):
            asyncio.get_running_loop().create_task(run_dtmf_callback(cb, digit))

    def _on_transfer_status(self, code: int, final: bool) -> None:
        fut = self._transfer
        log.info("%s: transfer status %d%s", self, code, " (final)" if final else "")
        if fut is not None and not fut.done():
            fut.set_result(code)  # the REFER's first report: accepted (1xx/2xx) or refused

    def _on_disconnected(self, reason: str) -> None:
        if not self._closing:
            self.close_reason = f"hangup: {reason}"
        asyncio.get_running_loop().create_task(self._finish())

    def on_dtmf(self, callback: DtmfCallback) -> None:
        """Call ``callback(DtmfDigit)`` for every key the caller presses."""
        self._dtmf_callbacks.append(callback)

    # --- PhoneLine --------------------------------------------------------------------------
    def phone_line(self) -> SIPTransport:
        return self

    async def wait_for_playout(self) -> None:
        await self.output.wait_drained()

    async def end_call(self) -> None:
        """Send BYE (or a final answer, if not yet answered) and end the session."""
        self.close_reason = self.close_reason or "agent_hung_up"
        await self.aclose("agent_hung_up")

    async def transfer_call(self, target: str, *, timeout_s: float = 10.0) -> None:
        """Blind transfer: REFER the caller to ``target``; returns once the caller accepted it.

        The caller's phone then calls ``target`` and ends this call with BYE.
        """
        call = self.call
        if call is None or self.closed.is_set():
            raise ToolError("the call is over; nothing to transfer")
        uri = target  # a sip:/sips: URI, or tel:+1555... for a PBX that routes numbers
        loop = asyncio.get_running_loop()
        self._transfer = loop.create_future()

        def refer() -> None:
            call.xfer(uri, pj.CallOpParam(True))

        try:
            await self.endpoint.run(refer)
        except Exception as e:
            raise ToolError(f"the transfer was refused: {e}") from e
        try:
            code = await asyncio.wait_for(self._transfer, timeout_s)
        except asyncio.TimeoutError:
            return  # REFER accepted; the transferee did not report back in time
        if code >= 300:
            raise ToolError(f"the transfer failed ({code})")

    # --- lifecycle --------------------------------------------------------------------------
    async def aclose(self, reason: str = "closed") -> None:
        if self._closing:
            await self.closed.wait()
            return
        self._closing = True
        self.close_reason = self.close_reason or reason
        call = self.call
        if call is not None:

            def hang_up() -> None:
                info = call.getInfo()
                if info.state != pj.PJSIP_INV_STATE_DISCONNECTED:
                    call.hangup(pj.CallOpParam(True))

            try:
                await self.endpoint.run(hang_up)
            except (SipEndpointError, Exception) as e:  # the call may already be gone
                log.debug("%s: hang-up: %s", self, e)
        await self._finish()

    async def _finish(self) -> None:
        if self.closed.is_set():
            return
        self._closing = True
        self.input.close()
        self.output.wake()
        call, self.call = self.call, None
        if call is not None:
            # PJSIP objects die on PJSIP's thread, after the call is over.
            self.endpoint.post(lambda: _release(call))
        await super().aclose()
        log.info("%s closed (%s)", self, self.close_reason)


def _release(call: SipCall) -> None:
    port = call.port
    call.port = None
    del port
    del call
