"""`SIPTransport`: one SIP call answered by the agent, its audio through PJSIP's bridge.

PJSIP decodes the caller's RTP (after its jitter buffer) into 20 ms PCM
frames of the bridge and pulls the agent's audio at the same pace from a
media port (`sip_media`). That pull is the sink's clock: the core
`OutputBuffer` paces the session, and what PJSIP pulled to encode and send is
the heard position interruption truncates to. Frames reach asyncio through
``call_soon_threadsafe``; the buffer's ``pull`` is safe on PJSIP's clock thread.

The transport never holds a pjsua2 object (see `sip_endpoint`): it holds its
call's key and acts on the call through `SipEndpoint.with_call`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from duplex.agents.audio import AudioFrame
from duplex.agents.errors import ToolError
from duplex.agents.output_buffer import BufferedAudioOutput
from duplex.agents.phone import (
    DtmfBuffer,
    DtmfCallback,
    dtmf_digit,
    run_dtmf_callback,
)
from duplex.agents.transport import QueuedAudioInput, Transport

from .sip_endpoint import BRIDGE_RATE, SipEndpoint, pj
from .sip_media import FRAME_MS, FRAME_SAMPLES, MediaPort

__all__ = ["SIPTransport", "SipAudioOutput", "SipCall"]

log = logging.getLogger(__name__)


class SipAudioOutput(BufferedAudioOutput):
    """The agent's voice in the core output buffer, pulled 20 ms at a time by PJSIP."""

    def __init__(self, *, max_buffer_ms: float = 100.0) -> None:
        super().__init__(BRIDGE_RATE, 1, capacity_ms=max_buffer_ms, frame_ms=float(FRAME_MS))

    @property
    def played_ms(self) -> float:
        """Milliseconds of agent audio PJSIP pulled to encode and send."""
        return self.buffer.pulled_ms


class SipCall(pj.Call):  # type: ignore[misc]
    """PJSIP's view of the call (PJSIP thread); every event hops to the transport's loop.

    Owned by the endpoint until its DISCONNECTED state is delivered.
    """

    def __init__(self, account: Any, call_id: int, transport: SIPTransport) -> None:
        super().__init__(account, call_id)
        self.transport = transport
        self.endpoint = transport.endpoint
        self.key = self.endpoint.adopt(self)
        self.port: MediaPort | None = None
        self.disconnected = False

    def onCallState(self, prm: Any) -> None:
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.disconnected = True
            if self.port is not None:  # the bridge unlinks the call's side itself
                self.endpoint.ports.release(self.port)
                self.port = None
            reason = f"{info.lastStatusCode} {info.lastReason}".strip()
            self.endpoint.to_loop(self.transport._on_disconnected, reason)
            self.endpoint.forget(self.key)  # freed once this callback returns
        elif info.state == pj.PJSIP_INV_STATE_CONFIRMED:
            self.endpoint.to_loop(self.transport._on_confirmed)

    def onCallMediaState(self, prm: Any) -> None:
        if self.disconnected:
            return
        info = self.getInfo()
        for i, media in enumerate(info.media):
            if media.type != pj.PJMEDIA_TYPE_AUDIO or media.status != pj.PJSUA_CALL_MEDIA_ACTIVE:
                continue
            audio = self.getAudioMedia(i)
            if self.port is None:
                self.port = self.endpoint.ports.acquire(self.transport)
            audio.startTransmit(self.port)
            self.port.startTransmit(audio)
            stream = self.getStreamInfo(i)
            codec = f"{stream.codecName}/{stream.codecClockRate}"
            self.endpoint.to_loop(self.transport._on_media, codec)

    def onDtmfDigit(self, prm: Any) -> None:
        method = "sip_info" if prm.method == pj.PJSUA_DTMF_METHOD_SIP_INFO else "rfc4733"
        self.endpoint.to_loop(self.transport._on_digit, str(prm.digit), method)

    def onCallTransferStatus(self, prm: Any) -> None:
        self.endpoint.to_loop(
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
        self.output = SipAudioOutput(max_buffer_ms=max_buffer_ms)
        self.audio_output = self.output
        self.dtmf = DtmfBuffer()
        self.dtmf_methods: list[str] = []
        self._dtmf_callbacks: list[DtmfCallback] = []
        #: The negotiated codec, e.g. ``PCMU/8000``, once media is up.
        self.codec: str | None = None
        self.media_ready = asyncio.Event()
        self.close_reason: str | None = None
        self.frames_received = 0
        #: The endpoint's key for this call's `SipCall` (the object stays on PJSIP's thread).
        self.call_key: int | None = None
        self._transfer: asyncio.Future[int] | None = None
        self._closing = False

    def __repr__(self) -> str:
        return f"<SIPTransport {self.remote_uri or '?'} codec={self.codec}>"

    # --- FrameSink: PJSIP's media clock thread ----------------------------------------------
    def pull_frame(self) -> bytes:
        return self.output.buffer.pull(FRAME_SAMPLES).tobytes()

    def push_frame(self, pcm: bytes) -> None:
        self.endpoint.to_loop(self._on_audio, pcm)

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
        if self.closed.is_set():
            raise ToolError("the call is over; nothing to transfer")
        uri = target  # a sip:/sips: URI, or tel:+1555... for a PBX that routes numbers
        loop = asyncio.get_running_loop()
        self._transfer = loop.create_future()

        def refer(call: Any) -> bool:
            call.xfer(uri, pj.CallOpParam(True))
            return True

        try:
            sent = await self.endpoint.with_call(self.call_key, refer)
        except Exception as e:
            raise ToolError(f"the transfer was refused: {e}") from e
        if not sent:
            raise ToolError("the call is over; nothing to transfer")
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
        try:
            await self.endpoint.with_call(self.call_key, _hang_up)
        except Exception as e:  # the call ended meanwhile, or PJSIP stopped
            log.debug("%s: hang-up: %s", self, e)
        await self._finish()

    async def _finish(self) -> None:
        if self.closed.is_set():
            return
        self._closing = True
        self.input.close()
        self.output.buffer.close()
        await super().aclose()
        log.info("%s closed (%s)", self, self.close_reason)


def _hang_up(call: Any) -> None:
    """BYE (or a final answer to a call not yet answered); DISCONNECTED follows."""
    call.hangup(pj.CallOpParam(True))
