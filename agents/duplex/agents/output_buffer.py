"""The one paced output buffer every transport plays from.

The session writes reply audio; the transport's clock pulls it (a WebRTC track's
``recv``, a sound card callback, a LiveKit pump, a test's manual clock). Three
positions on one stream axis make "heard" exact:

* written: the end of what the session handed over,
* pulled: what the transport took for playing,
* heard: what the caller has heard — the pulled position, unless a sink that
  knows better (a browser reporting playback, a phone provider echoing marks)
  reports it with `OutputBuffer.report_played`.

`clear` drops everything written and not yet heard and rewinds the axis to the
heard position, so "heard" never counts audio that was dropped. `pause` holds
playback where it is (the transport plays silence) and `resume` continues from
there; this is how a false interruption costs the caller nothing.

A writer that finds the buffer full waits until it has drained to half its capacity
(or empty), then refills it in one go: with a 200 ms WebRTC buffer and 20 ms pulls
that is one writer wake-up per 100 ms instead of one per frame, and the transport
still has at least half the buffer queued when the writer is woken.

`pull` may run on a device thread (the console's PortAudio callback): the sample
queue is guarded by a lock and the asyncio events are only touched on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable

import numpy as np

from .audio import AudioFrame, Int16Array
from .errors import AudioFormatError
from .transport import AudioOutput


class OutputBuffer:
    """A bounded, pausable queue of reply audio with exact played positions."""

    def __init__(
        self,
        sample_rate: int,
        channels: int = 1,
        *,
        capacity_ms: float = 200.0,
        sink_reports: bool = False,
    ) -> None:
        if capacity_ms <= 0:
            raise AudioFormatError("capacity_ms must be positive")
        self.sample_rate = sample_rate
        self.channels = channels
        self.capacity_ms = capacity_ms
        #: Heard comes only from `report_played` (the sink knows when audio was heard).
        self.sink_reports = sink_reports
        self._capacity = max(1, round(capacity_ms * sample_rate / 1000.0))
        #: A full buffer's writer is woken at this level (or empty).
        self._low_water = self._capacity // 2
        self._lock = threading.Lock()
        self._chunks: deque[Int16Array] = deque()
        self._buffered = 0  # samples in _chunks
        self._written = 0  # stream positions, in samples
        self._pulled = 0
        self._heard = 0
        self._paused = False
        self._closed = False
        self._generation = 0
        self._space = asyncio.Event()
        self._space.set()
        self._drained = asyncio.Event()
        self._drained.set()
        self._audio = asyncio.Event()
        self._busy = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        #: Milliseconds thrown away by `clear` over the whole call.
        self.dropped_ms = 0.0
        self._background: Callable[[Int16Array], None] | None = None

    # positions ---------------------------------------------------------------------------
    def _ms(self, samples: int) -> float:
        return 1000.0 * samples / self.sample_rate

    @property
    def written_ms(self) -> float:
        return self._ms(self._written)

    @property
    def pulled_ms(self) -> float:
        return self._ms(self._pulled)

    @property
    def heard_ms(self) -> float:
        """Stream position the caller has heard up to."""
        return self._ms(self._heard)

    @property
    def buffered_ms(self) -> float:
        """Written and not yet heard (what `clear` would drop)."""
        return self._ms(self._written - self._heard)

    @property
    def queued_ms(self) -> float:
        """Written and not yet pulled by the transport."""
        return self._ms(self._buffered)

    @property
    def in_flight_ms(self) -> float:
        """Pulled and not yet heard: audio a reporting sink (a phone provider) still holds."""
        return self._ms(self._pulled - self._heard)

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def drained(self) -> asyncio.Event:
        """Set while everything written has been heard."""
        return self._drained

    # writer side (event loop) ------------------------------------------------------------
    async def write(self, frame: AudioFrame) -> None:
        """Queue a frame; waits while the buffer is full. Dropped if cleared meanwhile."""
        if frame.sample_rate != self.sample_rate or frame.channels != self.channels:
            raise AudioFormatError(
                f"output takes {self.sample_rate} Hz/{self.channels} ch, got "
                f"{frame.sample_rate} Hz/{frame.channels} ch"
            )
        self._bind()
        n = frame.samples_per_channel
        generation = self._generation
        while not self._closed and self._buffered > 0 and self._buffered + n > self._capacity:
            self._space.clear()
            await self._space.wait()
            if generation != self._generation:
                return  # cleared while waiting: this audio belongs to a cut reply
        if self._closed or n == 0:
            return
        with self._lock:
            self._chunks.append(frame.data)
            self._buffered += n
            self._written += n
        self._notify()

    def clear(self) -> float:
        """Drop all audio not heard yet; returns the milliseconds dropped."""
        with self._lock:
            dropped = self._written - self._heard
            self._chunks.clear()
            self._buffered = 0
            self._written = self._pulled = self._heard
            self._generation += 1
        ms = self._ms(dropped)
        self.dropped_ms += ms
        self._notify()
        return ms

    def pause(self) -> None:
        """Hold playback where it is; the transport plays silence until `resume`."""
        self._paused = True
        self._notify()

    def resume(self) -> None:
        self._paused = False
        self._notify()

    def report_played(self, position_ms: float) -> None:
        """A sink's word on what was heard: a stream position (from `pulled_ms` it noted)."""
        pos = round(position_ms * self.sample_rate / 1000.0)
        with self._lock:
            self._heard = max(self._heard, min(pos, self._pulled))
        self._notify()

    async def wait_drained(self) -> None:
        await self._drained.wait()

    async def wait_audio(self) -> None:
        """Until there is audio to pull (and playback is not paused)."""
        await self._audio.wait()

    async def wait_busy(self) -> None:
        """Until there is audio to pull or playback is paused (a clock has something to do)."""
        await self._busy.wait()

    def close(self) -> None:
        """Nothing more will be played: wake writers and drain waiters."""
        self._closed = True
        self.clear()

    def set_background(self, mix: Callable[[Int16Array], None] | None) -> None:
        """A mixer (`BackgroundAudio`) that adds sound under what `pull` returns, in place.

        It never enters the reply stream, so positions and "heard" ignore it.
        """
        self._background = mix

    # transport side (any thread) ---------------------------------------------------------
    def pull(self, n: int) -> Int16Array:
        """``n`` samples per channel for the transport, silence where there is no audio."""
        out = np.zeros((n, self.channels), dtype=np.int16)
        filled = 0
        if not self._paused:
            with self._lock:
                filled = self._take(out, n)
        mix = self._background
        if mix is not None:
            mix(out)
        if filled:
            self._notify_from_any_thread()
        return out

    def take(self, max_samples: int) -> AudioFrame | None:
        """Up to ``max_samples`` of real audio (None when empty or paused): for clocks that
        record only what was played, such as the memory transport."""
        if self._paused:
            return None
        with self._lock:
            n = min(max_samples, self._buffered)
            if n <= 0:
                return None
            out = np.empty((n, self.channels), dtype=np.int16)
            self._take(out, n)
        mix = self._background
        if mix is not None:
            mix(out)
        self._notify_from_any_thread()
        return AudioFrame(out, self.sample_rate, self.channels, _checked=True)

    def _take(self, out: Int16Array, n: int) -> int:
        filled = 0
        while filled < n and self._chunks:
            head = self._chunks[0]
            k = min(n - filled, len(head))
            out[filled : filled + k] = head[:k]
            filled += k
            if k == len(head):
                self._chunks.popleft()
            else:
                self._chunks[0] = head[k:]
        self._buffered -= filled
        self._pulled += filled
        if not self.sink_reports:
            self._heard = self._pulled
        return filled

    # events (event loop only) ------------------------------------------------------------
    def _bind(self) -> None:
        if self._loop is None:
            with contextlib.suppress(RuntimeError):
                self._loop = asyncio.get_running_loop()
                self._loop_thread = threading.get_ident()

    def _notify_from_any_thread(self) -> None:
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread:
            self._notify()
        elif not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._notify)

    def _notify(self) -> None:
        if self._buffered <= self._low_water or self._closed:
            self._space.set()
        if self._written == self._heard or self._closed:
            self._drained.set()
        else:
            self._drained.clear()
        if self._buffered > 0 and not self._paused and not self._closed:
            self._audio.set()
        else:
            self._audio.clear()
        if (self._buffered > 0 or self._paused) and not self._closed:
            self._busy.set()
        else:
            self._busy.clear()


class BufferedAudioOutput(AudioOutput):
    """An `AudioOutput` backed by an `OutputBuffer`; a transport adds only its clock."""

    def __init__(
        self,
        sample_rate: int,
        channels: int = 1,
        *,
        capacity_ms: float = 200.0,
        frame_ms: float = 20.0,
        sink_reports: bool = False,
    ) -> None:
        self.sample_rate = sample_rate
        self.channels = channels
        self.frame_ms = frame_ms
        self.buffer = OutputBuffer(
            sample_rate, channels, capacity_ms=capacity_ms, sink_reports=sink_reports
        )

    async def write(self, frame: AudioFrame) -> None:
        await self.buffer.write(frame)

    def clear(self) -> float:
        return self.buffer.clear()

    @property
    def buffered_ms(self) -> float:
        return self.buffer.buffered_ms

    async def wait_drained(self) -> None:
        await self.buffer.wait_drained()

    def pause(self) -> bool:
        self.buffer.pause()
        return True

    def resume(self) -> None:
        self.buffer.resume()

    @property
    def heard_ms(self) -> float:
        """Milliseconds the caller has heard since the call started."""
        return self.buffer.heard_ms
