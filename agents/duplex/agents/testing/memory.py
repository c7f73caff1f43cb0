"""`MemoryTransport`: an in-process call for tests — feed caller audio, capture agent audio.

Its output has three clocks: ``auto`` plays every frame at once on a virtual
clock, ``manual`` plays only when the test calls `MemoryAudioOutput.play`, and
``realtime`` plays at 1x on the event loop's clock. With ``manual`` a test knows
exactly how much the caller "heard" when it barges in.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ..audio import AudioFrame, FrameChunker
from ..errors import AudioFormatError, SessionClosedError
from ..output_buffer import BufferedAudioOutput
from ..transport import AudioInput, FrameSink, Transport
from ..wav import read_wav

PlayoutMode = Literal["auto", "manual", "realtime"]
_EOF = object()


@dataclass(frozen=True)
class PlayedFrame:
    #: Position on the output clock (ms since the call started) when the frame began playing.
    at_ms: float
    frame: AudioFrame
    #: Monotonic time at which it was played (for latency checks against real clocks).
    wall: float = 0.0


class MemoryAudioInput(AudioInput):
    def __init__(self, sample_rate: int, channels: int) -> None:
        self.sample_rate = sample_rate
        self.channels = channels
        self._queue: asyncio.Queue[AudioFrame | object] = asyncio.Queue()
        self.pushed_ms = 0.0
        self._ended = False
        self._sink: FrameSink | None = None

    def set_sink(self, sink: FrameSink | None) -> bool:
        """Push-style, as a device callback would deliver (see `AudioInput.set_sink`)."""
        self._sink = sink
        if sink is not None:
            while not self._queue.empty():
                item = self._queue.get_nowait()
                if item is _EOF:
                    break
                assert isinstance(item, AudioFrame)
                sink.feed(item)
            if self._ended:
                sink.end()
        return True

    def push(self, frame: AudioFrame) -> None:
        if self._ended:
            raise SessionClosedError("input already ended")
        if not isinstance(frame, AudioFrame):
            raise AudioFormatError(f"push() takes an AudioFrame, got {type(frame).__name__}")
        self.pushed_ms += frame.duration_ms
        if self._sink is not None:
            self._sink.feed(frame)
        else:
            self._queue.put_nowait(frame)

    def end(self) -> None:
        if not self._ended:
            self._ended = True
            if self._sink is not None:
                self._sink.end()
            else:
                self._queue.put_nowait(_EOF)

    async def frames(self) -> AsyncIterator[AudioFrame]:
        while True:
            item = await self._queue.get()
            if item is _EOF:
                return
            assert isinstance(item, AudioFrame)
            yield item


class MemoryAudioOutput(BufferedAudioOutput):
    """The core `OutputBuffer` with a test clock; `played` is what the caller heard."""

    def __init__(
        self, sample_rate: int, channels: int, mode: PlayoutMode, buffer_frames: int = 1
    ) -> None:
        super().__init__(sample_rate, channels, capacity_ms=20.0 * max(1, buffer_frames))
        self.mode = mode
        self.played: list[PlayedFrame] = []
        self.clears: list[tuple[float, float]] = []  # (clock ms, ms dropped)
        #: Monotonic time of each clear (when the caller's audio stopped).
        self.cleared_at: list[float] = []
        #: (clock ms, "pause" | "resume") for every pause and resume of playback.
        self.pauses: list[tuple[float, str]] = []
        self.clock_ms = 0.0
        self._clock_task: asyncio.Task[None] | None = None

    @property
    def _frame_samples(self) -> int:
        return max(1, round(self.frame_ms * self.sample_rate / 1000.0))

    # AudioOutput ------------------------------------------------------------------------
    async def write(self, frame: AudioFrame) -> None:
        await self.buffer.write(frame)
        if self.mode == "auto":
            self._play_all()
        elif self.mode == "realtime" and self._clock_task is None:
            self._clock_task = asyncio.create_task(self._realtime_clock())

    def clear(self) -> float:
        dropped = self.buffer.clear()
        self.clears.append((self.clock_ms, dropped))
        self.cleared_at.append(time.monotonic())
        return dropped

    def pause(self) -> bool:
        self.pauses.append((self.clock_ms, "pause"))
        return super().pause()

    def resume(self) -> None:
        self.pauses.append((self.clock_ms, "resume"))
        super().resume()
        if self.mode == "auto":
            self._play_all()

    # test controls ----------------------------------------------------------------------
    async def play(self, ms: float, *, timeout: float = 10.0) -> float:
        """Manual clock: play ``ms`` of audio, waiting for the session to supply it.

        While playback is paused the clock passes silence (counted in the return value).
        """

        async def run() -> float:
            done = 0.0
            while done < ms:
                if self.buffer.paused:
                    self.clock_ms += self.frame_ms
                    done += self.frame_ms
                    await asyncio.sleep(0)
                    continue
                frame = self.buffer.take(self._frame_samples)
                if frame is None:
                    await self.buffer.wait_busy()
                    continue
                done += self._record(frame)
            return done

        return await asyncio.wait_for(run(), timeout)

    def listen(self, ms: float) -> AudioFrame:
        """Manual clock, as a phone line hears it: ``ms`` pulled whether or not the agent
        speaks (silence, and any background sound mixed under the voice, included).

        Reply audio pulled this way counts as heard, but is not added to `played`.
        """
        n = max(1, round(ms * self.sample_rate / 1000.0))
        data = self.buffer.pull(n)
        self.clock_ms += 1000.0 * n / self.sample_rate
        return AudioFrame(data, self.sample_rate, self.channels, _checked=True)

    @property
    def played_ms(self) -> float:
        return sum(p.frame.duration_ms for p in self.played)

    def audio(self) -> AudioFrame | None:
        """Everything played so far, as one frame."""
        if not self.played:
            return None
        return AudioFrame.concat([p.frame for p in self.played])

    async def aclose(self) -> None:
        self.buffer.close()
        if self._clock_task is not None:
            self._clock_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._clock_task

    # internals --------------------------------------------------------------------------
    def _record(self, frame: AudioFrame) -> float:
        self.played.append(PlayedFrame(self.clock_ms, frame, time.monotonic()))
        self.clock_ms += frame.duration_ms
        return frame.duration_ms

    def _play_all(self) -> None:
        while (frame := self.buffer.take(self._frame_samples)) is not None:
            self._record(frame)

    async def _realtime_clock(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            frame = self.buffer.take(self._frame_samples)
            if frame is None and not self.buffer.paused:
                await self.buffer.wait_busy()
                next_at = max(next_at, loop.time())  # the line went idle; restart the clock
                continue
            if loop.time() > next_at + 0.1:
                next_at = loop.time()
            if frame is None:  # paused: the clock runs on, playing silence
                self.clock_ms += self.frame_ms
                next_at += self.frame_ms / 1000.0
            else:
                self._record(frame)
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
