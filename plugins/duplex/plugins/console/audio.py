"""The local sound card as the call's audio: a microphone and a speaker stream.

Echo cancellation needs every speaker block (the reverse stream) and the delay
from playing a sample to capturing its echo, which PortAudio's timestamps give.
The callbacks run on PortAudio's threads; they only copy numpy blocks, run the
canceller and hand results to the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import numpy as np
import numpy.typing as npt

from duplex.agents.audio import AudioFrame
from duplex.agents.errors import AudioFormatError
from duplex.agents.output_buffer import BufferedAudioOutput
from duplex.agents.resample import Resampler
from duplex.agents.transport import QueuedAudioInput

from .aec import EchoCanceller
from .devices import AudioDeviceError, sounddevice

logger = logging.getLogger("duplex.plugins.console")
Int16 = npt.NDArray[np.int16]


class ConsoleAudioInput(QueuedAudioInput):
    """The microphone; the audio thread schedules `put` on the event loop."""

    def __init__(self, sample_rate: int, *, max_queue_ms: float = 2000.0) -> None:
        super().__init__(max_queue_ms=max_queue_ms, frame_ms=10.0)
        self.sample_rate = sample_rate
        self.channels = 1


class ConsoleAudioOutput(BufferedAudioOutput):
    """The core `OutputBuffer`, pulled by the speaker callback in real time."""

    def __init__(self, sample_rate: int, *, buffer_ms: float = 200.0) -> None:
        super().__init__(sample_rate, 1, capacity_ms=buffer_ms)
        self.buffer_ms = buffer_ms
        self._resampler: Resampler | None = None
        self._closed = False

    # audio thread --------------------------------------------------------------------------
    def pull(self, n: int) -> Int16:
        """``n`` samples for the speaker (silence where nothing is queued)."""
        return self.buffer.pull(n)[:, 0]

    def notify(self) -> None:
        """Kept for callers of the first release: the buffer wakes writers itself."""

    # AudioOutput -----------------------------------------------------------------------------
    @property
    def played_ms(self) -> float:
        return self.buffer.pulled_ms

    async def write(self, frame: AudioFrame) -> None:
        if self._closed:
            return
        conformed = self._conform(frame)
        if conformed is None or not conformed.samples_per_channel:
            return
        await self.buffer.write(conformed)

    def clear(self) -> float:
        if self._resampler is not None:
            self._resampler.reset()
        return self.buffer.clear()

    def close(self) -> None:
        self._closed = True
        self.buffer.close()

    def _conform(self, frame: AudioFrame) -> AudioFrame | None:
        if not isinstance(frame, AudioFrame):
            raise AudioFormatError(f"expected an AudioFrame, got {type(frame).__name__}")
        if frame.channels != 1:
            frame = frame.to_mono()
        if frame.sample_rate != self.sample_rate:
            r = self._resampler
            if r is None or r.input_rate != frame.sample_rate:
                r = self._resampler = Resampler(frame.sample_rate, self.sample_rate)
            return r.push(frame)
        return frame


class DeviceStream:
    """Owns the PortAudio streams; moves blocks between them, the canceller and the queues.

    Input and output are two half-duplex streams (PortAudio's ALSA duplex mode
    is fragile under load). The output callback gives each speaker block to the
    canceller as the reverse stream and notes the output latency; the input
    callback adds the input latency to get the echo delay.
    """

    def __init__(
        self,
        audio_in: ConsoleAudioInput,
        audio_out: ConsoleAudioOutput,
        *,
        input_device: int | None,
        output_device: int | None,
        echo_cancellation: bool = True,
        latency: float | str = "low",
    ) -> None:
        self.input = audio_in
        self.output = audio_out
        self.rate = audio_in.sample_rate
        self.block = self.rate // 100
        self._devices = (input_device, output_device)
        self._latency = latency
        self.aec = EchoCanceller(self.rate) if echo_cancellation else None
        self._streams: list[Any] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._out_latency = 0.0
        self.callbacks = 0
        self.status_flags: list[str] = []

    def start(self) -> None:
        sd = sounddevice()
        self._loop = asyncio.get_running_loop()
        common: dict[str, Any] = {
            "samplerate": self.rate,
            "blocksize": self.block,
            "dtype": "int16",
            "channels": 1,
            "latency": self._latency,
        }
        try:
            out = sd.OutputStream(device=self._devices[1], callback=self._play, **common)
            self._streams.append(out)
            mic = sd.InputStream(device=self._devices[0], callback=self._capture, **common)
            self._streams.append(mic)
            out.start()
            mic.start()
        except Exception as e:  # PortAudioError, or ValueError for a bad device
            self.stop()
            raise AudioDeviceError(f"could not open the sound devices: {e}") from e
        logger.info(
            "audio: %s Hz, latency in %.0f ms / out %.0f ms, echo cancellation %s",
            self.rate,
            1000 * mic.latency,
            1000 * out.latency,
            "on" if self.aec else "off",
        )

    def stop(self) -> None:
        streams, self._streams = self._streams, []
        for stream in streams:
            with contextlib.suppress(Exception):
                stream.abort()  # stop() would first play out what the device still holds
            with contextlib.suppress(Exception):
                stream.close()

    # PortAudio threads -------------------------------------------------------------------
    def _play(self, outdata: Any, frames: int, t: Any, status: Any) -> None:
        if status:
            self.status_flags.append(str(status))
        played = self.output.pull(frames)
        outdata[:, 0] = played
        self._out_latency = max(0.0, t.outputBufferDacTime - t.currentTime)
        if self.aec is not None and frames % self.block == 0:
            self.aec.far_end(played)

    def _capture(self, indata: Any, frames: int, t: Any, status: Any) -> None:
        self.callbacks += 1
        if status:
            self.status_flags.append(str(status))
        captured: Int16 = indata[:, 0].copy()
        if self.aec is not None and frames % self.block == 0:
            in_latency = max(0.0, t.currentTime - t.inputBufferAdcTime)
            self.aec.set_delay_ms(1000.0 * (self._out_latency + in_latency))
            captured = self.aec.near_end(captured)
        frame = AudioFrame(captured.reshape(-1, 1), self.rate, 1, _checked=True)
        self._post(self.input.put, frame)

    def _post(self, fn: Any, *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(fn, *args)
