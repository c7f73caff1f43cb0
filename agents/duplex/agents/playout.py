"""Playout: feeds reply audio to the transport and knows how much of each item was heard.

Back-pressure from `AudioOutput.write` paces it, so only a frame or two sits in
the transport; stopping cancels the pending write and clears that small buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .audio import AudioFrame, FrameChunker
from .resample import Resampler
from .transport import AudioOutput


@dataclass
class _Written:
    item_id: str
    ms: float


_END = object()


class Playout:
    """One per session. `push` never blocks; a task writes frames at the transport's pace."""

    def __init__(
        self,
        output: AudioOutput,
        source_rate: int,
        *,
        on_first_frame: Callable[[str], None] | None = None,
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        self.output = output
        self._source_rate = source_rate
        self._resampler = Resampler(source_rate, output.sample_rate)
        self._chunker = FrameChunker(output.sample_rate, output.channels, output.frame_ms)
        self._queue: asyncio.Queue[tuple[str, AudioFrame] | object] = asyncio.Queue()
        self._written: list[_Written] = []  # write order, newest last
        self._task: asyncio.Task[None] | None = None
        self._on_first_frame = on_first_frame
        self._on_idle = on_idle
        self._last_item: str | None = None
        self._pending_end = 0  # end markers queued and not yet reached
        self._idle = asyncio.Event()
        self._idle.set()
        self.first_frame_at: float | None = None

    # lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="duplex-playout")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # feeding ----------------------------------------------------------------------------
    def push(self, item_id: str, frame: AudioFrame) -> None:
        """Queue reply audio (mono, at the backend's output rate)."""
        if item_id != self._last_item and self._last_item is not None:
            self._flush_item(self._last_item)
        self._last_item = item_id
        out = self._resampler.push(frame)
        if out is not None:
            self._enqueue(item_id, out)

    def end_of_response(self) -> None:
        """No more audio for now: flush partial frames, then report idle once played."""
        if self._last_item is not None:
            self._flush_item(self._last_item)
            self._last_item = None
        self._pending_end += 1
        self._queue.put_nowait(_END)

    @property
    def active(self) -> bool:
        """True while reply audio is queued, being written or buffered in the transport."""
        return not self._idle.is_set()

    # accounting -------------------------------------------------------------------------
    def played_ms(self, item_id: str) -> float:
        """Milliseconds of ``item_id`` the caller has heard so far."""
        unplayed = self.output.buffered_ms
        total = 0.0
        for w in reversed(self._written):
            heard = max(0.0, w.ms - unplayed)
            unplayed = max(0.0, unplayed - w.ms)
            if w.item_id == item_id:
                total += heard
        return total

    async def stop(self) -> dict[str, float]:
        """Stop now: drop queued audio, clear the transport, return ms heard per item."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        dropped = self.output.clear()
        heard: dict[str, float] = {}
        for w in reversed(self._written):
            kept = max(0.0, w.ms - dropped)
            dropped = max(0.0, dropped - w.ms)
            heard[w.item_id] = heard.get(w.item_id, 0.0) + kept
        while not self._queue.empty():
            entry = self._queue.get_nowait()
            if isinstance(entry, tuple):
                heard.setdefault(entry[0], 0.0)
        if self._last_item is not None:
            heard.setdefault(self._last_item, 0.0)
        self._reset()
        self._task = asyncio.create_task(self._run(), name="duplex-playout")
        return heard

    def mark_new_response(self) -> None:
        """The next frame written is the first of a new reply (for metrics and state)."""
        self.first_frame_at = None

    # internals --------------------------------------------------------------------------
    def _reset(self) -> None:
        self._written.clear()
        self._resampler.reset()
        self._chunker.clear()
        self._last_item = None
        self._pending_end = 0
        self._queue = asyncio.Queue()
        self._idle.set()

    def _flush_item(self, item_id: str) -> None:
        tail = self._resampler.flush()
        if tail is not None:
            self._enqueue(item_id, tail)
        rest = self._chunker.flush(pad=True)
        if rest is not None:
            self._queue.put_nowait((item_id, rest))

    def _enqueue(self, item_id: str, frame: AudioFrame) -> None:
        if self.output.channels != frame.channels:
            frame = AudioFrame(
                np.repeat(frame.data[:, :1], self.output.channels, axis=1),
                frame.sample_rate,
                self.output.channels,
                _checked=True,
            )
        for chunk in self._chunker.push(frame):
            self._idle.clear()
            self._queue.put_nowait((item_id, chunk))

    async def _run(self) -> None:
        while True:
            entry = await self._queue.get()
            if entry is _END:
                self._pending_end -= 1
                if self._pending_end <= 0 and self._queue.empty():
                    await self.output.wait_drained()
                    if self._queue.empty() and self._pending_end <= 0:
                        self._idle.set()
                        if self._on_idle is not None:
                            self._on_idle()
                continue
            assert isinstance(entry, tuple)
            item_id, frame = entry
            self._idle.clear()
            await self.output.write(frame)
            if self._written and self._written[-1].item_id == item_id:
                self._written[-1].ms += frame.duration_ms
            else:
                self._written.append(_Written(item_id, frame.duration_ms))
                if len(self._written) > 64:
                    del self._written[0]
            if self.first_frame_at is None:
                self.first_frame_at = time.monotonic()
                if self._on_first_frame is not None:
                    self._on_first_frame(item_id)
