"""The two real clocks of a simulated call, shared by both frameworks' adapters.

`Metronome` is the callers' microphones: 20 ms frames delivered on the real
clock. Callers sit in 1 ms phase slots, so their frames are not in lock-step
while one timer per slot (not per caller) keeps the harness's own CPU small.

`PlayoutClock` is the far side's speaker: it plays 20 ms frames at 1x from the
moment the first frame of a reply arrives, and records when each reply started,
how late each frame played, and when the output was stopped (cleared or paused).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import config as C

FRAME_S = C.FRAME_MS / 1000.0
#: An output gap longer than this is the end of one reply and the start of the next.
SEGMENT_GAP_S = 0.3


class LatenessHistogram:
    """Output-frame lateness in 0.25 ms bins up to 2 s; one per process, memory stays flat."""

    BIN_MS = 0.25
    BINS = 8000

    def __init__(self) -> None:
        self.counts = np.zeros(self.BINS + 1, dtype=np.int64)
        self.enabled = False

    def add(self, late_s: float) -> None:
        if self.enabled:
            i = int(max(0.0, late_s) * 1000.0 / self.BIN_MS)
            self.counts[min(i, self.BINS)] += 1

    def percentile(self, q: float) -> float | None:
        total = int(self.counts.sum())
        if total == 0:
            return None
        rank = q / 100.0 * total
        idx = int(np.searchsorted(np.cumsum(self.counts), rank, side="left"))
        return (idx + 1) * self.BIN_MS

    @property
    def total(self) -> int:
        return int(self.counts.sum())


@dataclass
class Segment:
    """One reply as the caller heard it."""

    start_at: float
    played_ms: float = 0.0
    stopped_at: float | None = None
    last_frame_at: float = 0.0
    underruns: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "start_at": self.start_at,
            "played_ms": self.played_ms,
            "stopped_at": self.stopped_at,
            "underruns": self.underruns,
        }


class PlayoutClock:
    """A 1x speaker. ``write`` queues a 20 ms frame; frames play on ``loop.call_at`` ticks."""

    def __init__(self, histogram: LatenessHistogram) -> None:
        self._loop = asyncio.get_running_loop()
        self._hist = histogram
        self._buf: deque[float] = deque()  # durations, seconds; the audio itself is not kept
        self._due: float | None = None  # when the next frame is due, while playing
        self._timer: asyncio.TimerHandle | None = None
        self._paused = False
        self._starved_at: float | None = None
        self._space: deque[asyncio.Future[None]] = deque()
        self._drained: list[asyncio.Future[None]] = []
        self.segments: list[Segment] = []
        self.stops: list[float] = []

    # --- what the caller watches ----------------------------------------------------------
    @property
    def current(self) -> Segment | None:
        return self.segments[-1] if self.segments else None

    @property
    def playing(self) -> bool:
        return self._due is not None

    @property
    def buffered_frames(self) -> int:
        return len(self._buf)

    @property
    def buffered_ms(self) -> float:
        return 1000.0 * sum(self._buf)

    # --- what the framework's sink calls --------------------------------------------------
    def write(self, duration_s: float = FRAME_S) -> None:
        self._buf.append(duration_s)
        if self._due is not None or self._paused:
            return
        now = self._loop.time()
        starved, self._starved_at = self._starved_at, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        seg = self.current
        if starved is not None and seg is not None and seg.stopped_at is None:
            seg.underruns += 1  # the reply went on late: that gap is lateness
            self._play(now, now, now - starved)
            self._arm()
            return
        if seg is None or seg.stopped_at is not None or now - seg.last_frame_at > SEGMENT_GAP_S:
            self.segments.append(Segment(start_at=time.monotonic()))
        self._play(now, now, 0.0)
        self._arm()

    async def wait_space(self, capacity: int) -> None:
        while len(self._buf) >= capacity:
            fut = self._loop.create_future()
            self._space.append(fut)
            await fut

    async def wait_drained(self) -> None:
        while self._buf:
            fut = self._loop.create_future()
            self._drained.append(fut)
            await fut

    def clear(self) -> float:
        """Drop what is queued and stop now; returns the milliseconds dropped."""
        dropped = 1000.0 * sum(self._buf)
        self._buf.clear()
        self._stop()
        seg = self.current
        if seg is not None and seg.stopped_at is None:
            seg.stopped_at = time.monotonic()
        self._wake_all()
        return dropped

    def pause(self) -> None:
        if not self._paused:
            self._paused = True
            self._stop()

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            if self._buf:
                now = self._loop.time()
                self._play(now, now, 0.0)
                self._arm()

    # --- internals ------------------------------------------------------------------------
    def _stop(self) -> None:
        # Stopping a reply that ran dry mid-way (waiting for its next frame) stops it too:
        # under load a barge-in often lands in such an underrun.
        seg = self.current
        unfinished = (
            seg is not None
            and seg.stopped_at is None
            and seg.played_ms < C.REPLY_MS - 3 * C.FRAME_MS
        )
        if self._due is not None or unfinished:
            self.stops.append(time.monotonic())
        self._due = None
        self._starved_at = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _play(self, now: float, anchor: float, late: float) -> float:
        """Play the next frame; returns when the one after it is due."""
        dur = self._buf.popleft()
        self._hist.add(late)
        seg = self.current
        if seg is not None:
            seg.played_ms += 1000.0 * dur
            seg.last_frame_at = now
        self._due = anchor + dur
        if self._space:
            fut = self._space.popleft()
            if not fut.done():
                fut.set_result(None)
        if not self._buf:
            self._wake_drained()
        return self._due

    def _arm(self) -> None:
        assert self._due is not None
        self._timer = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        self._timer = None
        due = self._due
        assert due is not None
        now = self._loop.time()
        # A 1x clock does not wait for the event loop: after a stall it plays every frame
        # that fell due meanwhile, each as late as it is.
        while self._buf and due <= now:
            due = self._play(now, due, now - due)
        if due > now:
            self._arm()
            return
        # Ran dry. Mid-reply that is an underrun: the next frame counts as late from ``due``.
        self._due = None
        seg = self.current
        if seg is not None and seg.played_ms < C.REPLY_MS - 3 * C.FRAME_MS:
            self._starved_at = due
            self._timer = self._loop.call_at(due + SEGMENT_GAP_S, self._give_up)
        self._wake_all()

    def _give_up(self) -> None:
        self._timer = None
        self._starved_at = None  # no more audio came: the reply simply ended

    def _wake_drained(self) -> None:
        for fut in self._drained:
            if not fut.done():
                fut.set_result(None)
        self._drained.clear()

    def _wake_all(self) -> None:
        while self._space:
            fut = self._space.popleft()
            if not fut.done():
                fut.set_result(None)
        self._wake_drained()


@dataclass
class _Slot:
    members: list[Callable[[float], None]] = field(default_factory=list)


class Metronome:
    """Calls each member once per 20 ms with the frame's due time, catching up after stalls."""

    def __init__(self, slots: int = 20) -> None:
        self._loop = asyncio.get_running_loop()
        self._slots = [_Slot() for _ in range(slots)]
        self._handles: list[asyncio.TimerHandle] = []
        self._n = 0
        self.max_lag_s = 0.0
        self.running = False

    def add(self, member: Callable[[float], None]) -> None:
        self._slots[self._n % len(self._slots)].members.append(member)
        self._n += 1

    def start(self) -> None:
        self.running = True
        t0 = self._loop.time() + 0.01
        for i, slot in enumerate(self._slots):
            due = t0 + i * FRAME_S / len(self._slots)
            self._handles.append(self._loop.call_at(due, self._tick, slot, due, i))

    def stop(self) -> None:
        self.running = False
        for h in self._handles:
            h.cancel()

    def _tick(self, slot: _Slot, due: float, i: int) -> None:
        if not self.running:
            return
        now = self._loop.time()
        self.max_lag_s = max(self.max_lag_s, now - due)
        while due <= now:
            for member in slot.members:
                member(due)
            due += FRAME_S
        self._handles[i] = self._loop.call_at(due, self._tick, slot, due, i)
