"""`WebRTCTransport`: one browser (or any WebRTC peer) as a duplex `Transport`.

One ``RTCPeerConnection`` per peer. The peer's microphone track becomes the
session's input; `AgentAudioTrack` carries the agent's voice back; a data
channel carries session events out and typed text in. The call ends, and every
task of it stops, on hang-up, ICE failure, or when the peer's audio stops
arriving for ``media_timeout_s`` (a crashed tab sends no goodbye).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import deque
from collections.abc import Coroutine
from typing import Any

import av
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import SessionDescription

from duplex.agents.audio import AudioFrame
from duplex.agents.errors import DuplexError
from duplex.agents.transport import QueuedAudioInput, Transport

from .audio import AgentAudioTrack, av_to_frame
from .messages import ProtocolError, event_to_message, parse_client_message

__all__ = ["PeerAudioInput", "SignalingError", "WebRTCTransport"]

log = logging.getLogger(__name__)

#: Frames of caller audio held for a slow consumer (~10 s) before the oldest are dropped.
INPUT_QUEUE_FRAMES = 500
#: Close reasons that mean the peer is already gone (no goodbye is sent).
PEER_GONE = frozenset({"hangup", "connection_closed", "ice_failed", "media_timeout", "track_ended"})
#: Events held while the data channel is not open yet.
PENDING_MESSAGES = 256


class SignalingError(DuplexError, ValueError):
    """The peer's SDP offer cannot be used; the message says why."""


class PeerAudioInput(QueuedAudioInput):
    """The caller's microphone, fed by the transport's reader task (the core's bounded queue)."""

    def __init__(self) -> None:
        super().__init__(max_queue_ms=INPUT_QUEUE_FRAMES * 20.0, frame_ms=20.0)
        self.frames_received = 0

    def put(self, frame: AudioFrame) -> None:
        if not self.closed:
            self.frames_received += 1
        super().put(frame)

    @property
    def frames_dropped(self) -> int:
        return self.dropped_frames

    def end(self) -> None:
        self.close()


class WebRTCTransport(Transport):
    """A call with one WebRTC peer. Create it, then `accept` the peer's offer."""

    def __init__(
        self,
        *,
        session_id: str | None = None,
        ice_servers: list[RTCIceServer] | None = None,
        media_timeout_s: float = 5.0,
        connect_timeout_s: float = 20.0,
        max_buffer_ms: float = 200.0,
    ) -> None:
        super().__init__()
        self.session_id = session_id or uuid.uuid4().hex[:16]
        # No STUN by default: a local playground needs none, and a lookup would stall offline.
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers or []))
        self.audio_input: PeerAudioInput = PeerAudioInput()
        self.audio_output: AgentAudioTrack = AgentAudioTrack(max_buffer_ms=max_buffer_ms)
        self.media_timeout_s = media_timeout_s
        self.connect_timeout_s = connect_timeout_s
        #: Why the call ended: ``hangup``, ``connection_closed`` (DTLS close or ICE consent
        #: expired), ``ice_failed``, ``media_timeout``, ``connect_timeout``, or the
        #: reason given to `aclose` (``closed`` when the session hangs up).
        self.close_reason: str | None = None
        self._channel: RTCDataChannel | None = None
        self._pending: deque[str] = deque(maxlen=PENDING_MESSAGES)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self.pc.on("track", self._on_track)
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("connectionstatechange", self._on_connection_state)

    # --- signaling ----------------------------------------------------------------------
    async def accept(self, offer_sdp: str) -> str:
        """Answer the peer's offer; returns the answer SDP (ICE candidates included)."""
        try:
            check_offer(offer_sdp)
        except SignalingError:
            await self.aclose("bad_offer")
            raise
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            self.pc.addTrack(self.audio_output)
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            await self.aclose("bad_offer")
            raise SignalingError(f"cannot negotiate with this offer: {e}") from e
        self._spawn(self._watch_connect())
        return str(self.pc.localDescription.sdp)

    # --- Transport ----------------------------------------------------------------------
    def publish(self, event: object) -> None:
        message = event_to_message(event)
        if message is not None:
            self.send_json(message)

    def send_json(self, message: dict[str, Any]) -> None:
        """Send one message to the page now, or as soon as the data channel opens."""
        text = json.dumps(message, separators=(",", ":"))
        channel = self._channel
        if channel is not None and channel.readyState == "open":
            channel.send(text)
        elif not self.closed.is_set():
            self._pending.append(text)

    async def aclose(self, reason: str = "closed") -> None:
        """Hang up: close the peer connection and stop every task of this call."""
        self._close_soon(reason)
        assert self._closing is not None
        await asyncio.shield(self._closing)

    @property
    def tasks(self) -> frozenset[asyncio.Task[Any]]:
        """Tasks this call still runs (empty once closed); tests use it to prove cleanup."""
        return frozenset(t for t in self._tasks if not t.done())

    # --- internals ----------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _close_soon(self, reason: str) -> None:
        if self._closing is None:
            log.info("webrtc %s: closing (%s)", self.session_id, reason)
            self.close_reason = reason
            self._closing = asyncio.ensure_future(self._shutdown())

    async def _shutdown(self) -> None:
        self.audio_input.end()
        self.audio_output.stop()
        self._pending.clear()
        try:
            # Say goodbye only when we hang up on a live peer; a gone one cannot hear it.
            channel = self._channel
            if (
                self.close_reason not in PEER_GONE
                and self.pc.connectionState == "connected"
                and channel is not None
                and channel.readyState == "open"
            ):
                channel.send(json.dumps({"type": "closed", "reason": self.close_reason}))
            await self.pc.close()
        except Exception:
            log.exception("webrtc %s: closing the peer connection failed", self.session_id)
        finally:
            others = [t for t in self._tasks if not t.done()]
            for t in others:
                t.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            await super().aclose()

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "audio":
            return
        log.debug("webrtc %s: audio track %s", self.session_id, track.id)
        self._spawn(self._read(track))

    async def _read(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await asyncio.wait_for(track.recv(), self.media_timeout_s)
            except MediaStreamError:
                self._close_soon("track_ended")
                return
            except TimeoutError:
                self._close_soon("media_timeout")
                return
            if isinstance(frame, av.AudioFrame):
                self.audio_input.put(av_to_frame(frame))

    async def _watch_connect(self) -> None:
        try:
            await asyncio.wait_for(self._connected.wait(), self.connect_timeout_s)
        except TimeoutError:
            self._close_soon("connect_timeout")

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        log.debug("webrtc %s: connection %s", self.session_id, state)
        if state == "connected":
            self._connected.set()
        elif state in ("failed", "closed"):
            self._close_soon("ice_failed" if state == "failed" else "connection_closed")

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        self._channel = channel
        channel.on("message", self._on_message)
        channel.on("close", lambda: self._close_soon("hangup"))
        if channel.readyState == "open":
            self._flush()
        else:
            channel.on("open", self._flush)

    def _flush(self) -> None:
        channel = self._channel
        while channel is not None and self._pending and channel.readyState == "open":
            channel.send(self._pending.popleft())

    def _on_message(self, raw: str | bytes) -> None:
        try:
            msg = parse_client_message(raw)
        except ProtocolError as e:
            self.send_json({"type": "error", "code": "bad_message", "message": str(e)})
            return
        if msg["type"] == "text":
            self._spawn(self._deliver(msg["text"]))
        elif msg["type"] == "hangup":
            self._close_soon("hangup")
        elif msg["type"] == "ping":
            self.send_json({"type": "pong"})

    async def _deliver(self, text: str) -> None:
        try:
            await self.deliver_text(text)
        except DuplexError as e:
            self.send_json({"type": "error", "code": "text_refused", "message": str(e)})


def check_offer(sdp: object) -> None:
    """Refuse SDP that aiortc would accept silently but cannot carry a call."""
    if not isinstance(sdp, str) or not sdp.strip():
        raise SignalingError("the offer has no SDP")
    if not sdp.lstrip().startswith("v=0"):
        raise SignalingError("the offer is not SDP (it must start with v=0)")
    try:
        parsed = SessionDescription.parse(sdp)
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise SignalingError(f"the offer's SDP does not parse: {e}") from e
    if not any(m.kind == "audio" for m in parsed.media):
        raise SignalingError("the offer has no audio m-line; add a microphone or audio transceiver")
    for m in parsed.media:
        if m.ice is None or not (m.ice.usernameFragment and m.ice.password):
            raise SignalingError("the offer lacks ICE credentials (a=ice-ufrag / a=ice-pwd)")
        if m.dtls is None or not m.dtls.fingerprints:
            raise SignalingError("the offer lacks a DTLS fingerprint")
