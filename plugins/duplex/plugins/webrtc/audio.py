"""Audio at the WebRTC edge: PyAV frames in, a paced Opus-bound track out.

aiortc pulls outgoing audio by calling ``recv()`` on a track as fast as it
returns, so the track itself is the clock: it hands out one 20 ms frame per
20 ms of wall time, real audio when the session wrote some, silence otherwise.
"""

from __future__ import annotations

import asyncio
import fractions
import logging

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from duplex.agents.audio import AudioFrame, Int16Array, float_to_pcm16
from duplex.agents.errors import AudioFormatError
from duplex.agents.output_buffer import BufferedAudioOutput

__all__ = ["RATE", "AgentAudioTrack", "av_to_frame"]

log = logging.getLogger(__name__)

#: WebRTC's Opus runs at 48 kHz; matching it means aiortc never resamples.
RATE = 48000
FRAME_MS = 20
FRAME_SAMPLES = RATE * FRAME_MS // 1000
#: Behind schedule by more than this, the clock re-anchors instead of bursting to catch up.
MAX_LAG_S = 0.1


def av_to_frame(frame: av.AudioFrame) -> AudioFrame:
    """A decoded PyAV frame as a mono duplex frame (Opus from a mic is mono content)."""
    channels = len(frame.layout.channels)
    arr = frame.to_ndarray()
    arr = arr.T if frame.format.is_planar else arr.reshape(-1, channels)
    if arr.dtype == np.int16:
        data: Int16Array = np.ascontiguousarray(arr)
    elif arr.dtype.kind == "f":
        data = float_to_pcm16(arr)
    else:
        raise AudioFormatError(f"unsupported PyAV sample format {frame.format.name}")
    return AudioFrame(data, frame.sample_rate, channels).to_mono()


class AgentAudioTrack(MediaStreamTrack, BufferedAudioOutput):
    """The agent's voice: an aiortc audio track that is also the session's `AudioOutput`.

    The core `OutputBuffer` holds at most ``max_buffer_ms`` ahead of what is sent, so
    the session never runs far ahead of the caller's ears and ``clear`` (an
    interruption) drops at most that much; ``recv`` is the clock that pulls it.
    """

    kind = "audio"

    def __init__(self, *, max_buffer_ms: float = 200.0) -> None:
        MediaStreamTrack.__init__(self)
        BufferedAudioOutput.__init__(
            self, RATE, 1, capacity_ms=max(float(FRAME_MS), max_buffer_ms), frame_ms=FRAME_MS
        )
        self._start: float | None = None
        self._pts = 0
        self.frames_sent = 0

    @property
    def sent_samples(self) -> int:
        """Samples of written audio handed to the encoder (what the caller will hear)."""
        return round(self.buffer.pulled_ms * RATE / 1000)

    # --- AudioOutput ------------------------------------------------------------------
    async def write(self, frame: AudioFrame) -> None:
        if frame.sample_rate != RATE:
            raise AudioFormatError(f"WebRTC output takes {RATE} Hz audio, got {frame.sample_rate}")
        if self.readyState != "live":
            return  # the call is over; nobody will hear it
        await self.buffer.write(frame.to_mono())

    # --- MediaStreamTrack ---------------------------------------------------------------
    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._start is None:
            self._start = now
        else:
            self._pts += FRAME_SAMPLES
            due = self._start + self._pts / RATE
            if now - due > MAX_LAG_S:
                # The loop stalled: play on from now rather than flood the peer's jitter buffer.
                self._start = now - self._pts / RATE
            elif due > now:
                await asyncio.sleep(due - now)
        if self.readyState != "live":
            raise MediaStreamError
        samples = self.buffer.pull(FRAME_SAMPLES)
        out = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        out.sample_rate = RATE
        out.pts = self._pts
        out.time_base = fractions.Fraction(1, RATE)
        self.frames_sent += 1
        return out

    def stop(self) -> None:
        super().stop()
        # Wake writers and drain waiters: nothing more will be played.
        self.buffer.close()
