"""Caller audio: any format in, mono at the backend's rate out, with turn detection on the way.

In local-turn mode only speech reaches the backend (prefix padding, speech,
trailing silence up to the end decision); with server turn detection every
frame goes, because the server's VAD needs the silence too.

Push-style: a transport that can (`AudioInput.set_sink`) calls `feed` from its own
frame callback, and a frame goes resample -> VAD -> backend right there, with no
queue or task switch. Only what must await (a turn event's handler, a backend
that cannot take audio without awaiting) moves to a worker task; frames that
arrive meanwhile wait behind it in a bounded backlog, so order is kept.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable

from .audio import AudioFrame
from .errors import AudioFormatError
from .resample import LOW_LATENCY, Resampler
from .transport import AudioInput
from .vad import SpeechEnd, SpeechStart, TurnDetector

logger = logging.getLogger("duplex.agents.input")

Push = Callable[[AudioFrame], Awaitable[None]]
PushNowait = Callable[[AudioFrame], bool]
#: Called after each frame; returns something to await only when there is work to do.
FrameHook = Callable[[], Awaitable[None] | None]
#: Frames whose capture time is remembered (a minute of 20 ms frames).
_CLOCK_FRAMES = 3000
#: Caller audio that may wait behind a slow turn-event handler before the oldest goes.
MAX_BACKLOG_MS = 30_000.0

# Steps left for the worker when a frame cannot finish synchronously.
_PUSH, _START, _END, _HOOK = range(4)
_Step = tuple[int, object, float]


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
        on_frame: FrameHook,
        push_nowait: PushNowait | None = None,
        max_backlog_ms: float = MAX_BACKLOG_MS,
    ) -> None:
        self.backend_rate = backend_rate
        self._push = push
        self._push_nowait = push_nowait
        self.detector = detector
        self._stream_all = stream_all
        self._on_start = on_speech_start
        self._on_end = on_speech_end
        self._on_frame = on_frame
        self._resampler: Resampler | None = None
        self.frames_in = 0
        self.rejected = 0
        #: Frames dropped because the backlog outgrew ``max_backlog_ms``.
        self.dropped = 0
        #: Milliseconds of caller audio processed (the axis server VAD positions count on).
        self.position_ms = 0.0
        self._ends: deque[float] = deque(maxlen=_CLOCK_FRAMES)  # position at each frame's end
        self._arrivals: deque[float] = deque(maxlen=_CLOCK_FRAMES)  # when that frame arrived
        self._arrived_at = time.monotonic()
        self._max_backlog_ms = max_backlog_ms
        self._backlog: deque[tuple[AudioFrame, float]] = deque()
        self._backlog_ms = 0.0
        self._worker: asyncio.Task[None] | None = None
        self._idle: asyncio.Event | None = None
        self._done: asyncio.Future[None] | None = None

    # --- clock ---------------------------------------------------------------------------
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

    # --- delivery ------------------------------------------------------------------------
    async def serve(self, source: AudioInput) -> None:
        """Take ``source``'s frames until it ends: pushed to `feed` when it can, else pulled."""
        if source.max_backlog_ms is not None:
            self._max_backlog_ms = source.max_backlog_ms
        # before attaching: frames queued in the source are fed at once, and may fail
        self._done = asyncio.get_running_loop().create_future()
        if not source.set_sink(self):
            self._done = None
            await self.run(source.frames())
            return
        try:
            await self._done
            await self.drain()
            self._raise_failure()
        finally:
            source.set_sink(None)
            if self._worker is not None:
                self._worker.cancel()

    async def run(self, frames: AsyncIterator[AudioFrame]) -> None:
        """Pull-style: the same processing, one frame after the other."""
        async for frame in frames:
            self.feed(frame)
            if self._worker is not None:
                await self.drain()
                self._raise_failure()
        await self.drain()
        self._raise_failure()

    def feed(self, frame: AudioFrame) -> None:
        """One caller frame, now (from the transport's callback, on the loop's thread)."""
        now = time.monotonic()
        if self._worker is not None:
            self._queue(frame, now)
            return
        self._arrived_at = now
        try:
            steps = self._take(frame)
        except Exception as e:  # never into the transport's callback
            self._fail(e)
            return
        if steps:
            self._start_worker(steps)

    def end(self) -> None:
        """The source ended: `serve` returns once what was fed is processed."""
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    async def drain(self) -> None:
        """Wait until every frame fed so far is processed."""
        while self._worker is not None:
            if self._idle is None:
                self._idle = asyncio.Event()
            await self._idle.wait()

    @property
    def backlog_ms(self) -> float:
        return self._backlog_ms

    # --- processing ----------------------------------------------------------------------
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

    def _take(self, frame: AudioFrame) -> list[_Step] | None:
        """Convert and process ``frame``; the steps left that must await, if any."""
        self.frames_in += 1
        try:
            out = self._convert(frame)
        except AudioFormatError as e:
            self.rejected += 1
            logger.warning("dropping caller frame: %s", e)
            return None
        if out is None:
            return None
        return self._process(out, frame if frame.sample_rate != out.sample_rate else None)

    def _process(self, out: AudioFrame, vad_audio: AudioFrame | None) -> list[_Step] | None:
        """One frame at the backend rate, mono; ``vad_audio`` the caller's own, for the VAD."""
        self.position_ms += out.duration_ms
        self._ends.append(self.position_ms)
        self._arrivals.append(self._arrived_at)
        steps: list[_Step] | None = None
        if self._stream_all and not self._push_now(out):
            steps = [(_PUSH, out, 0.0)]
        det = self.detector
        if det is None:
            return self._hook(steps)
        pushed = self._stream_all
        was_speaking = det.speaking
        for ev in det.push(out, vad_audio):
            if steps is None:
                steps = []
            if isinstance(ev, SpeechStart):
                if not self._stream_all:
                    for f in ev.prefix:
                        steps.append((_PUSH, f, 0.0))
                    pushed = True
                steps.append((_START, ev, self.capture_time(ev.at_ms)))
            else:
                if not pushed and was_speaking:
                    steps.append((_PUSH, out, 0.0))
                    pushed = True
                steps.append((_END, ev, self.capture_time(ev.at_ms)))
        if not pushed and det.speaking:
            if steps is not None:
                steps.append((_PUSH, out, 0.0))
            elif not self._push_now(out):
                steps = [(_PUSH, out, 0.0)]
        return self._hook(steps)

    def _hook(self, steps: list[_Step] | None) -> list[_Step] | None:
        if steps is not None:
            steps.append((_HOOK, None, 0.0))
            return steps
        pending = self._on_frame()
        if pending is None:
            return None
        return [(_HOOK, pending, 0.0)]

    def _push_now(self, frame: AudioFrame) -> bool:
        nowait = self._push_nowait
        return nowait is not None and nowait(frame)

    async def _run_steps(self, steps: list[_Step]) -> None:
        for kind, item, at in steps:
            if kind == _PUSH:
                assert isinstance(item, AudioFrame)
                if not self._push_now(item):
                    await self._push(item)
            elif kind == _START:
                assert isinstance(item, SpeechStart)
                await self._on_start(item, at)
            elif kind == _END:
                assert isinstance(item, SpeechEnd)
                await self._on_end(item, at)
            else:
                pending = item if item is not None else self._on_frame()
                if pending is not None:
                    await pending  # type: ignore[misc]

    # --- worker (only while something awaits) --------------------------------------------
    def _start_worker(self, steps: list[_Step]) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._work(steps))

    async def _work(self, steps: list[_Step]) -> None:
        try:
            await self._run_steps(steps)
            while self._backlog:
                frame, at = self._backlog.popleft()
                self._backlog_ms -= frame.duration_ms
                self._arrived_at = at
                more = self._take(frame)
                if more:
                    await self._run_steps(more)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._fail(e)
        finally:
            self._worker = None
            if self._idle is not None:
                self._idle.set()
                self._idle = None

    def _queue(self, frame: AudioFrame, now: float) -> None:
        self._backlog.append((frame, now))
        self._backlog_ms += frame.duration_ms
        while self._backlog_ms > self._max_backlog_ms and len(self._backlog) > 1:
            old, _ = self._backlog.popleft()
            self._backlog_ms -= old.duration_ms
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 500 == 0:
                logger.warning("caller audio backlog full: %d frames dropped", self.dropped)

    def _fail(self, e: BaseException) -> None:
        self._backlog.clear()
        self._backlog_ms = 0.0
        if self._done is not None and not self._done.done():
            self._done.set_exception(e)
        else:
            self._failure = e

    _failure: BaseException | None = None

    def _raise_failure(self) -> None:
        e, self._failure = self._failure, None
        if e is not None:
            raise e
