"""Caller audio: any format in, mono at the backend's rate out, with turn detection on the way.

In local-turn mode only speech reaches the backend (prefix padding, speech,
trailing silence up to the end decision); with server turn detection every
frame goes, because the server's VAD needs the silence too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from .audio import AudioFrame
from .errors import AudioFormatError
from .resample import LOW_LATENCY, Resampler
from .vad import SpeechEnd, SpeechStart, TurnDetector

logger = logging.getLogger("duplex.agents.input")

Push = Callable[[AudioFrame], Awaitable[None]]


class InputPath:
    def __init__(
        self,
        backend_rate: int,
        push: Push,
        *,
        detector: TurnDetector | None,
        stream_all: bool,
        on_speech_start: Callable[[SpeechStart, float], Awaitable[None]],
        on_speech_end: Callable[[SpeechEnd, float], Awaitable[None]],
        on_frame: Callable[[], Awaitable[None]],
    ) -> None:
        self.backend_rate = backend_rate
        self._push = push
        self.detector = detector
        self._stream_all = stream_all
        self._on_start = on_speech_start
        self._on_end = on_speech_end
        self._on_frame = on_frame
        self._resampler: Resampler | None = None
        self.frames_in = 0
        self.rejected = 0

    def _convert(self, frame: AudioFrame) -> AudioFrame | None:
        r = self._resampler
        if r is None or r.input_rate != frame.sample_rate or r.input_channels != frame.channels:
            # The format changed mid-call (a renegotiated track): start a fresh filter.
            r = self._resampler = Resampler(
                frame.sample_rate,
                self.backend_rate,
                input_channels=frame.channels,
                quality=LOW_LATENCY,  # HQ would hold back up to 38 ms of the caller's audio
            )
        return r.push(frame)

    def wall_time_of(self, audio_ms: float) -> float:
        """Monotonic time at which the audio at ``audio_ms`` arrived (for latency metrics)."""
        if self.detector is None:
            return time.monotonic()
        return time.monotonic() - max(0.0, self.detector.audio_ms - audio_ms) / 1000.0

    async def run(self, frames: AsyncIterator[AudioFrame]) -> None:
        async for frame in frames:
            self.frames_in += 1
            try:
                out = self._convert(frame)
            except AudioFormatError as e:
                self.rejected += 1
                logger.warning("dropping caller frame: %s", e)
                continue
            if out is None:
                continue
            await self.process(out)

    async def process(self, out: AudioFrame) -> None:
        """One frame already at the backend rate, mono."""
        if self._stream_all:
            await self._push(out)
        det = self.detector
        if det is None:
            await self._on_frame()
            return
        pushed = self._stream_all
        was_speaking = det.speaking
        for ev in det.push(out):
            if isinstance(ev, SpeechStart):
                if not self._stream_all:
                    for f in ev.prefix:
                        await self._push(f)
                    pushed = True
                await self._on_start(ev, self.wall_time_of(ev.at_ms))
            else:
                if not pushed and was_speaking:
                    await self._push(out)
                    pushed = True
                await self._on_end(ev, self.wall_time_of(ev.at_ms))
        if not pushed and det.speaking:
            await self._push(out)
        await self._on_frame()
