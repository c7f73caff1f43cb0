"""Playout: feeds reply audio to the transport and knows how much of each item was heard.

Every frame it writes gets a span on one stream axis; the transport's output
buffer says how much of that axis the caller has heard (written minus not yet
heard), so the heard milliseconds of an item are the overlap of its span with
the heard part. Back-pressure from `AudioOutput.write` paces it; `stop` cancels
the pending write and clears the transport, `pause`/`resume` hold it.

While its task is idle (nothing queued, no write waiting), a frame is written
straight from `push`: an output with room takes it without a task switch, and the
first frame of a reply reaches the transport in the same callback that decoded it
instead of one event-loop pass later. Only a write the output makes wait goes to
the task, and every later frame queues behind it, so frames keep their order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from . import nowait
from .audio import AudioFrame, FrameChunker
from .resample import Resampler
from .transport import AudioOutput

_END = object()


class _Waiting:
    """A frame whose write `push` started and the output made wait: the task finishes it."""

    __slots__ = ("frame", "item_id", "write")

    def __init__(self, item_id: str, frame: AudioFrame, write: nowait.Suspended) -> None:
        self.item_id = item_id
        self.frame = frame
        self.write = write


#: Spans kept for items whose reply is settled (their heard ms was read long ago).
_MAX_SPANS = 64


class Playout:
    """One per session. `push` never blocks; a task writes frames at the transport's pace."""

    def __init__(
        self,
        output: AudioOutput,
        source_rate: int,
        *,
        on_item_started: Callable[[str, float], None] | None = None,
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        self.output = output
        self._resampler = Resampler(source_rate, output.sample_rate)
        self._chunker = FrameChunker(output.sample_rate, output.channels, output.frame_ms)
        self._queue: asyncio.Queue[tuple[str, AudioFrame] | _Waiting | object] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        #: The task waits on an empty queue: a frame may be written straight from `push`.
        self._parked = False
        self._on_item_started = on_item_started
        self._on_idle = on_idle
        self._last_item: str | None = None
        self._pending_end = 0  # end markers queued and not yet reached
        self._idle = asyncio.Event()
        self._idle.set()
        self._pos = 0.0  # ms written to the output (stream axis)
        self._spans: OrderedDict[str, list[float]] = OrderedDict()  # item -> [start, end]
        self._paused = False

    # lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="duplex-playout")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        self._parked = False
        if task is None:
            return
        # Cancelled until it ends: on Python 3.11 an `asyncio.wait_for` inside an output's
        # `wait_drained` swallows the cancel when its inner wait finishes at that moment
        # (the call closing does both), and the task would wait for audio forever.
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.5)
        with contextlib.suppress(asyncio.CancelledError):
            task.result()

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

    @property
    def paused(self) -> bool:
        return self._paused

    # accounting -------------------------------------------------------------------------
    @property
    def heard_position_ms(self) -> float:
        return max(0.0, self._pos - self.output.buffered_ms)

    def heard_ms(self, item_id: str) -> float:
        """Milliseconds of ``item_id`` the caller has heard so far."""
        span = self._spans.get(item_id)
        if span is None:
            return 0.0
        start, end = span
        return max(0.0, min(self.heard_position_ms, end) - start)

    def written_ms(self, item_id: str) -> float:
        """Milliseconds of ``item_id`` handed to the transport (heard or not)."""
        span = self._spans.get(item_id)
        return 0.0 if span is None else span[1] - span[0]

    # control ----------------------------------------------------------------------------
    async def stop(self) -> float:
        """Stop now: drop queued audio and clear the transport; returns the ms dropped there.

        Items keep the spans they were heard for, so `heard_ms` stays right after a stop.
        """
        self._parked = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        dropped = self.output.clear()
        self._pos = max(0.0, self._pos - dropped)
        for span in self._spans.values():
            span[0] = min(span[0], self._pos)
            span[1] = min(span[1], self._pos)
        self._reset()
        if self._paused:
            self._paused = False
            self.output.resume()
        self._task = asyncio.create_task(self._run(), name="duplex-playout")
        return dropped

    def pause(self) -> bool:
        """Hold the caller's playback where it is; False when the transport cannot."""
        if self._paused:
            return True
        self._paused = self.output.pause()
        return self._paused

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            self.output.resume()

    # internals --------------------------------------------------------------------------
    def _reset(self) -> None:
        self._resampler.reset()
        self._chunker.clear()
        self._last_item = None
        self._pending_end = 0
        while not self._queue.empty():
            entry = self._queue.get_nowait()
            if isinstance(entry, _Waiting):
                entry.write.close()  # its audio belongs to the cut reply
        self._queue = asyncio.Queue()
        self._parked = False
        self._idle.set()

    def _flush_item(self, item_id: str) -> None:
        tail = self._resampler.flush()
        if tail is not None:
            self._enqueue(item_id, tail)
        rest = self._chunker.flush(pad=True)
        if rest is not None:
            self._idle.clear()
            self._submit(item_id, rest)

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
            self._submit(item_id, chunk)

    def _submit(self, item_id: str, frame: AudioFrame) -> None:
        """Write now when nothing is ahead of this frame, else queue it for the task."""
        if not (self._parked and self._queue.empty()):
            self._queue.put_nowait((item_id, frame))
            return
        waiting = nowait.start(self.output.write(frame))
        if waiting is None:
            self._written(item_id, frame)
        else:
            self._queue.put_nowait(_Waiting(item_id, frame, waiting))

    def _written(self, item_id: str, frame: AudioFrame) -> None:
        if self._wrote(item_id, frame.duration_ms) and self._on_item_started is not None:
            self._on_item_started(item_id, time.monotonic())

    def _wrote(self, item_id: str, ms: float) -> bool:
        """Account a written frame; True when it is the item's first."""
        span = self._spans.get(item_id)
        first = span is None
        if span is None:
            span = self._spans[item_id] = [self._pos, self._pos]
            while len(self._spans) > _MAX_SPANS:
                self._spans.popitem(last=False)
        self._pos += ms
        span[1] = self._pos
        return first

    async def _run(self) -> None:
        while True:
            self._parked = True  # observed only if `get` suspends (the queue is empty)
            entry = await self._queue.get()
            self._parked = False
            if entry is _END:
                self._pending_end -= 1
                if self._pending_end <= 0 and self._queue.empty():
                    await self.output.wait_drained()
                    if self._queue.empty() and self._pending_end <= 0:
                        self._idle.set()
                        if self._on_idle is not None:
                            self._on_idle()
                continue
            self._idle.clear()
            if isinstance(entry, _Waiting):
                await entry.write.finish()
                self._written(entry.item_id, entry.frame)
                continue
            assert isinstance(entry, tuple)
            item_id, frame = entry
            await self.output.write(frame)
            self._written(item_id, frame)
