"""A plain aiortc peer in the browser's role, for tests that need no browser."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from duplex.agents.audio import AudioFrame
from duplex.plugins.webrtc import AgentAudioTrack, av_to_frame


def tone48k(freq: float, ms: float, level: float = 0.3) -> AudioFrame:
    t = np.arange(round(48 * ms)) / 48000.0
    return AudioFrame.from_float((level * np.sin(2 * np.pi * freq * t)).astype(np.float32), 48000)


def dominant_hz(frames: list[AudioFrame]) -> float:
    data = np.concatenate([f.to_mono().data[:, 0] for f in frames]).astype(np.float32)
    spectrum = np.abs(np.fft.rfft(data * np.hanning(len(data))))
    return float(np.fft.rfftfreq(len(data), 1 / 48000.0)[int(np.argmax(spectrum))])


class StalledTrack(MediaStreamTrack):
    """A microphone that stops producing audio: what the far side sees of a frozen tab."""

    kind = "audio"

    async def recv(self) -> Any:
        await asyncio.Event().wait()


class ClientPeer:
    """Offers audio (a paced track it can write to) and the ``duplex`` data channel."""

    def __init__(self, source: MediaStreamTrack | None = None) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.mic = source if source is not None else AgentAudioTrack(max_buffer_ms=2000)
        self.pc.addTrack(self.mic)
        self.channel = self.pc.createDataChannel("duplex")
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.channel.on("message", lambda raw: self.messages.put_nowait(json.loads(raw)))
        self.opened = asyncio.Event()
        self.channel.on("open", self.opened.set)
        self.remote: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
        self.pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if not self.remote.done():
            self.remote.set_result(track)

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def answer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        await asyncio.wait_for(self.opened.wait(), 10)

    async def next_message(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next data-channel message of type ``kind`` (earlier ones are skipped)."""

        async def find() -> dict[str, Any]:
            while True:
                msg = await self.messages.get()
                if msg.get("type") == kind:
                    return msg

        return await asyncio.wait_for(find(), timeout)

    async def receive_burst(
        self, *, level: float = 0.05, timeout: float = 10.0
    ) -> list[AudioFrame]:
        """The next stretch of audible agent audio, up to the silence after it."""
        track = await asyncio.wait_for(self.remote, timeout)
        voiced: list[AudioFrame] = []
        quiet_after = 0
        while quiet_after < 10:
            received = await asyncio.wait_for(track.recv(), timeout)
            assert isinstance(received, av.AudioFrame)
            frame = av_to_frame(received)
            if frame.rms() > level:
                voiced.append(frame)
                quiet_after = 0
            elif voiced:
                quiet_after += 1
        return voiced

    def send(self, message: dict[str, Any] | str) -> None:
        self.channel.send(message if isinstance(message, str) else json.dumps(message))

    async def close(self) -> None:
        with contextlib.suppress(MediaStreamError):
            await self.pc.close()
