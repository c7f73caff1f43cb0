"""Caller audio: any format in, mono at the backend's rate out, with turn detection on the way.

In local-turn mode only speech reaches the backend (prefix padding, speech,
trailing silence up to the end decision); with server turn detection every
frame goes, because the server's VAD needs the silence too.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable

from .audio import AudioFrame
from .errors import AudioFormatError
from .resample import LOW_LATENCY, Resampler
from .vad import SpeechEnd, SpeechStart, TurnDetector

logger = logging.getLogger("duplex.agents.input")

Push = Callable[[AudioFrame], Awaitable[None]]
#: Frames whose capture time is remembered (a minute of 20 ms frames).
_CLOCK_FRAMES = 3000


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
        #: Milliseconds of caller audio processed (the axis server VAD positions count on).
        self.position_ms = 0.0
        self._ends: deque[float] = deque(maxlen=_CLOCK_FRAMES)  # position at each frame's end
        self._arrivals: deque[float] = deque(maxlen=_CLOCK_FRAMES)  # when that frame arrived
        self._arrived_at = time.monotonic()

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

    def capture_time(self, position_ms: float) -> float:
        """Monotonic time at which the caller audio at ``position_ms`` was captured.

        A frame's last sample arrived with it; earlier samples of the frame were
        captured that much before. Positions outside the remembered window are
        extrapolated from the nearest frame.
        """
        if not self._ends:
            return time.monotonic() - max(0.0, self.position_ms - position_ms) / 1000.0
        i = min(bisect.bisect_left(self._ends, position_ms), len(self._ends) - 1)
        return self._arrivals[i] - (self._ends[i] - position_ms) / 1000.0

    def wall_time_of(self, audio_ms: float) -> float:
        """Alias of `capture_time` (kept for callers of the first release)."""
        return self.capture_time(audio_ms)

    async def run(self, frames: AsyncIterator[AudioFrame]) -> None:
        async for frame in frames:
            self._arrived_at = time.monotonic()
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
        self.position_ms += out.duration_ms
        self._ends.append(self.position_ms)
        self._arrivals.append(self._arrived_at)
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
                await self._on_start(ev, self.capture_time(ev.at_ms))
            else:
                if not pushed and was_speaking:
                    await self._push(out)
                    pushed = True
                await self._on_end(ev, self.capture_time(ev.at_ms))
        if not pushed and det.speaking:
            await self._push(out)
        await self._on_frame()
