"""`MemoryTransport`: an in-process call for tests — feed caller audio, capture agent audio.

Its output has three clocks: ``auto`` plays every frame at once on a virtual
clock, ``manual`` plays only when the test calls `MemoryAudioOutput.play`, and
``realtime`` plays at 1x on the event loop's clock. With ``manual`` a test knows
exactly how much the caller "heard" when it barges in.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ..audio import AudioFrame, FrameChunker
from ..errors import AudioFormatError, SessionClosedError
from ..transport import AudioInput, AudioOutput, Transport
from ..wav import read_wav

PlayoutMode = Literal["auto", "manual", "realtime"]
_EOF = object()


@dataclass(frozen=True)
class PlayedFrame:
    #: Position on the output clock (ms since the call started) when the frame began playing.
    at_ms: float
    frame: AudioFrame


class MemoryAudioInput(AudioInput):
    def __init__(self, sample_rate: int, channels: int) -> None:
        self.sample_rate = sample_rate
        self.channels = channels
        self._queue: asyncio.Queue[AudioFrame | object] = asyncio.Queue()
        self.pushed_ms = 0.0
        self._ended = False

    def push(self, frame: AudioFrame) -> None:
        if self._ended:
            raise SessionClosedError("input already ended")
        if not isinstance(frame, AudioFrame):
            raise AudioFormatError(f"push() takes an AudioFrame, got {type(frame).__name__}")
        self.pushed_ms += frame.duration_ms
        self._queue.put_nowait(frame)

    def end(self) -> None:
        if not self._ended:
            self._ended = True
            self._queue.put_nowait(_EOF)

    async def frames(self) -> AsyncIterator[AudioFrame]:
        while True:
            item = await self._queue.get()
            if item is _EOF:
                return
            assert isinstance(item, AudioFrame)
            yield item


class MemoryAudioOutput(AudioOutput):
    def __init__(
        self, sample_rate: int, channels: int, mode: PlayoutMode, buffer_frames: int = 1
    ) -> None:
        self.sample_rate = sample_rate
        self.channels = channels
        self.mode = mode
        self.frame_ms = 20.0
        self.played: list[PlayedFrame] = []
        self.clears: list[tuple[float, float]] = []  # (clock ms, ms dropped)
        self.clock_ms = 0.0
        self._buffer: deque[AudioFrame] = deque()
        self._capacity = max(1, buffer_frames)
        self._changed = asyncio.Condition()
        self._clock_task: asyncio.Task[None] | None = None

    # AudioOutput ------------------------------------------------------------------------
    async def write(self, frame: AudioFrame) -> None:
        if frame.sample_rate != self.sample_rate or frame.channels != self.channels:
            raise AudioFormatError(
                f"output takes {self.sample_rate} Hz/{self.channels} ch, got "
                f"{frame.sample_rate} Hz/{frame.channels} ch"
            )
        if self.mode == "auto":
            self._play_one(frame)
            return
        async with self._changed:
            await self._changed.wait_for(lambda: len(self._buffer) < self._capacity)
            self._buffer.append(frame)
            self._changed.notify_all()
        if self.mode == "realtime" and self._clock_task is None:
            self._clock_task = asyncio.create_task(self._realtime_clock())

    def clear(self) -> float:
        dropped = sum(f.duration_ms for f in self._buffer)
        self._buffer.clear()
        self.clears.append((self.clock_ms, dropped))
        self._notify()
        return dropped

    @property
    def buffered_ms(self) -> float:
        return sum(f.duration_ms for f in self._buffer)

    async def wait_drained(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: not self._buffer)

    # test controls ----------------------------------------------------------------------
    async def play(self, ms: float, *, timeout: float = 10.0) -> float:
        """Manual clock: play ``ms`` of audio, waiting for the session to supply it."""

        async def run() -> float:
            done = 0.0
            async with self._changed:
                while done < ms:
                    await self._changed.wait_for(lambda: bool(self._buffer))
                    done += self._play_one(self._buffer.popleft())
                    self._changed.notify_all()
            return done

        return await asyncio.wait_for(run(), timeout)

    @property
    def played_ms(self) -> float:
        return sum(p.frame.duration_ms for p in self.played)

    def audio(self) -> AudioFrame | None:
        """Everything played so far, as one frame."""
        if not self.played:
            return None
        return AudioFrame.concat([p.frame for p in self.played])

    async def aclose(self) -> None:
        if self._clock_task is not None:
            self._clock_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._clock_task

    # internals --------------------------------------------------------------------------
    def _play_one(self, frame: AudioFrame) -> float:
        self.played.append(PlayedFrame(self.clock_ms, frame))
        self.clock_ms += frame.duration_ms
        return frame.duration_ms

    def _notify(self) -> None:
        async def notify() -> None:
            async with self._changed:
                self._changed.notify_all()

        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().create_task(notify())

    async def _realtime_clock(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda: bool(self._buffer))
                if loop.time() > next_at + 0.1:
                    next_at = loop.time()  # the line went idle; restart the clock
                frame = self._buffer.popleft()
                self._play_one(frame)
                self._changed.notify_all()
            next_at += frame.duration
            await asyncio.sleep(max(0.0, next_at - loop.time()))


class MemoryTransport(Transport):
    """A call held in memory. Push caller audio in; read what the agent played."""

    def __init__(
        self,
        *,
        input_rate: int = 48000,
        input_channels: int = 1,
        output_rate: int = 48000,
        output_channels: int = 1,
        playout: PlayoutMode = "auto",
        buffer_frames: int = 1,
    ) -> None:
        super().__init__()
        self.audio_input: MemoryAudioInput = MemoryAudioInput(input_rate, input_channels)
        self.audio_output: MemoryAudioOutput = MemoryAudioOutput(
            output_rate, output_channels, playout, buffer_frames
        )
        self.published: list[object] = []
        self.started = False

    @property
    def output(self) -> MemoryAudioOutput:
        return self.audio_output

    async def start(self) -> None:
        self.started = True

    def publish(self, event: object) -> None:
        self.published.append(event)

    # feeding ----------------------------------------------------------------------------
    def push(self, frame: AudioFrame, *, frame_ms: float = 20.0) -> None:
        """Caller audio in transport-sized frames (as a real microphone delivers it)."""
        chunker = FrameChunker(frame.sample_rate, frame.channels, frame_ms)
        for chunk in chunker.push(frame):
            self.audio_input.push(chunk)
        rest = chunker.flush()
        if rest is not None:
            self.audio_input.push(rest)

    def push_silence(self, ms: float) -> None:
        inp = self.audio_input
        self.push(AudioFrame.silence(ms / 1000.0, inp.sample_rate, inp.channels))

    def push_wav(self, path: str | Path) -> AudioFrame:
        frame = read_wav(path)
        self.push(frame)
        return frame

    def end_input(self) -> None:
        self.audio_input.end()

    async def aclose(self) -> None:
        self.audio_input.end()
        await self.audio_output.aclose()
        await super().aclose()


def tone(ms: float, sample_rate: int, freq: float = 440.0, level: float = 0.3) -> AudioFrame:
    """A sine tone: scripted reply audio that needs no speech model."""
    t = np.arange(round(sample_rate * ms / 1000.0)) / sample_rate
    return AudioFrame.from_float(level * np.sin(2 * np.pi * freq * t), sample_rate)
