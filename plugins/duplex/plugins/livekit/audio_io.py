"""Audio between a LiveKit room and the session.

Input: the followed participant's microphone, through ``rtc.AudioStream`` at the
rate the backend wants, so no second resampling happens downstream.
Output: one published ``LocalAudioTrack`` fed by ``rtc.AudioSource``. Its queue
is the jitter buffer the far side plays from; keeping it small (a few hundred
ms) is what lets an interruption stop the voice quickly, and its level is how
we know how much of what was written has really been heard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import numpy as np

from duplex.agents.audio import AudioFrame, FrameChunker
from duplex.agents.errors import AudioFormatError
from duplex.agents.output_buffer import BufferedAudioOutput
from duplex.agents.resample import Resampler
from duplex.agents.transport import QueuedAudioInput
from livekit import rtc

logger = logging.getLogger("duplex.plugins.livekit")

#: The native source moves audio in 10 ms blocks; a partial block would wait for the next write.
_BLOCK_MS = 10.0
#: Depth of the native queue behind our buffer: enough that the source never starves.
_NATIVE_QUEUE_MS = 40.0


def to_rtc_frame(frame: AudioFrame) -> rtc.AudioFrame:
    return rtc.AudioFrame(
        frame.to_pcm16(), frame.sample_rate, frame.channels, frame.samples_per_channel
    )


def from_rtc_frame(frame: rtc.AudioFrame) -> AudioFrame:
    data = np.frombuffer(frame.data, dtype=np.int16).copy()
    return AudioFrame(data.reshape(-1, frame.num_channels), frame.sample_rate, frame.num_channels)


class RoomAudioInput(QueuedAudioInput):
    """Frames of whichever track is attached; stays one iterator across participant switches."""

    def __init__(
        self, sample_rate: int = 24000, channels: int = 1, *, max_queue_ms: float = 2000.0
    ) -> None:
        super().__init__(max_queue_ms=max_queue_ms, frame_ms=_BLOCK_MS)
        self.sample_rate = sample_rate
        self.channels = channels
        self.frame_ms = _BLOCK_MS
        self._stream: rtc.AudioStream | None = None
        self._reader: asyncio.Task[None] | None = None
        self.track_sid: str | None = None
        self.received_frames = 0

    def attach(self, track: rtc.Track) -> None:
        """Listen to ``track`` from now on (replacing any previous one)."""
        if self._closed:
            return
        self._stop_reader()
        self.track_sid = track.sid
        self._stream = rtc.AudioStream.from_track(
            track=track, sample_rate=self.sample_rate, num_channels=self.channels
        )
        self._reader = asyncio.get_running_loop().create_task(
            self._read(self._stream), name=f"livekit-mic-{track.sid}"
        )

    def detach(self) -> None:
        self._stop_reader()
        self.track_sid = None

    def _stop_reader(self) -> None:
        stream, reader = self._stream, self._reader
        self._stream, self._reader = None, None
        if reader is not None:
            reader.cancel()
        if stream is not None:
            # aclose only releases the native handle; run it without blocking the caller
            task = asyncio.get_running_loop().create_task(stream.aclose())
            task.add_done_callback(_log_failure)

    async def _read(self, stream: rtc.AudioStream) -> None:
        async for event in stream:
            self.received_frames += 1
            self.put(from_rtc_frame(event.frame))

    def close(self) -> None:
        if not self.closed:
            self.detach()
        super().close()


class RoomAudioOutput(BufferedAudioOutput):
    """The agent's published voice.

    The core `OutputBuffer` (``buffer_ms``) paces the session; a pump moves 10 ms
    blocks from it into the native ``rtc.AudioSource`` queue, kept just deep enough
    that the source never starves. What left the native queue is what the far side
    was sent, and the pump reports that as the played position, so "heard" never
    counts audio still waiting natively. ``clear`` empties both queues at once.
    """

    def __init__(
        self,
        sample_rate: int = 24000,
        channels: int = 1,
        *,
        buffer_ms: float = 200.0,
        track_name: str = "agent-voice",
    ) -> None:
        if buffer_ms < 2 * _BLOCK_MS:
            raise AudioFormatError(f"buffer_ms must be at least {2 * _BLOCK_MS:.0f} ms")
        # buffer_ms bounds all audio ahead of the listener: ours, the native queue and the
        # block being handed over.
        ours = max(_BLOCK_MS, buffer_ms - _NATIVE_QUEUE_MS - 2 * _BLOCK_MS)
        super().__init__(sample_rate, channels, capacity_ms=ours, sink_reports=True)
        self.buffer_ms = buffer_ms
        self.track_name = track_name
        self._source: rtc.AudioSource | None = None
        self._track: rtc.LocalAudioTrack | None = None
        self._chunker = FrameChunker(sample_rate, channels, _BLOCK_MS)
        self._resampler: Resampler | None = None
        self._pump: asyncio.Task[None] | None = None
        self._generation = 0
        self._closed = False

    # setup -------------------------------------------------------------------------------
    @property
    def source(self) -> rtc.AudioSource:
        if self._source is None:
            self._source = rtc.AudioSource(
                self.sample_rate,
                self.channels,
                queue_size_ms=int(_NATIVE_QUEUE_MS),
                loop=asyncio.get_running_loop(),
            )
        return self._source

    @property
    def track(self) -> rtc.LocalAudioTrack:
        if self._track is None:
            self._track = rtc.LocalAudioTrack.create_audio_track(self.track_name, self.source)
        return self._track

    # AudioOutput -------------------------------------------------------------------------
    @property
    def buffered_ms(self) -> float:
        self._report()
        return self.buffer.buffered_ms + self._pending_ms()

    @property
    def played_ms(self) -> float:
        """Milliseconds that left the native queue since the start: what the far side got."""
        self._report()
        return self.buffer.heard_ms

    async def write(self, frame: AudioFrame) -> None:
        if self._closed:
            return
        conformed = self._conform(frame)
        if conformed is None:
            return
        self._start_pump()
        generation = self._generation
        for block in self._chunker.push(conformed):
            if generation != self._generation:
                return  # cleared meanwhile: the rest belongs to the interrupted reply
            await self.buffer.write(block)

    def clear(self) -> float:
        self._report()
        pending = self._pending_ms()
        self._generation += 1
        self._chunker.clear()
        if self._resampler is not None:
            self._resampler.reset()
        if self._source is not None:
            self._source.clear_queue()
        return self.buffer.clear() + pending

    async def wait_drained(self) -> None:
        tail = self._chunker.flush(pad=True)
        if tail is not None:
            self._start_pump()
            await self.buffer.write(tail)
        await self.buffer.wait_drained()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.buffer.close()
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        if self._source is not None:
            self._source.clear_queue()
            await self._source.aclose()

    # internals ---------------------------------------------------------------------------
    def _native_ms(self) -> float:
        return 0.0 if self._source is None else 1000.0 * self._source.queued_duration

    def _report(self) -> None:
        self.buffer.report_played(self.buffer.pulled_ms - self._native_ms())

    def _pending_ms(self) -> float:
        return 1000.0 * self._chunker.pending_samples / self.sample_rate

    def _start_pump(self) -> None:
        if self._pump is None and not self._closed:
            self._pump = asyncio.get_running_loop().create_task(
                self._run_pump(), name="livekit-voice-pump"
            )

    async def _run_pump(self) -> None:
        """Moves blocks into the native queue; tracks its play-out while it drains."""
        source = self.source
        block = round(_BLOCK_MS * self.sample_rate / 1000.0)
        buf = self.buffer
        while not self._closed:
            self._report()
            if buf.paused or buf.queued_ms <= 0:
                if buf.heard_ms < buf.pulled_ms:
                    await asyncio.sleep(_BLOCK_MS / 1000.0)  # the native queue still plays
                else:
                    await buf.wait_audio()
                continue
            frame = buf.take(block)
            if frame is None:
                continue
            await source.capture_frame(to_rtc_frame(frame))

    def _conform(self, frame: AudioFrame) -> AudioFrame | None:
        if not isinstance(frame, AudioFrame):
            raise AudioFormatError(f"expected an AudioFrame, got {type(frame).__name__}")
        if frame.sample_rate == self.sample_rate and frame.channels == self.channels:
            return frame
        if self.channels != 1:
            raise AudioFormatError(
                f"output is {self.sample_rate} Hz/{self.channels} ch, frame is "
                f"{frame.sample_rate} Hz/{frame.channels} ch"
            )
        r = self._resampler
        if r is None or r.input_rate != frame.sample_rate or r.input_channels != frame.channels:
            r = self._resampler = Resampler(
                frame.sample_rate, self.sample_rate, input_channels=frame.channels
            )
        return r.push(frame)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.debug("closing an audio stream failed", exc_info=task.exception())
