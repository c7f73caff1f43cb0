"""Background audio: a "thinking" cue while tools run, and optional ambience, under the voice.

Both are mixed into the output where the transport pulls it (`OutputBuffer.pull`), so
they never enter the reply stream: what counts as heard, and what a barge-in truncates,
is the reply's audio alone. The thinking cue starts when a tool has run for
``thinking_delay_s`` and stops within one frame when the tools finish or the caller
speaks.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING

import numpy as np

from .audio import AudioFrame, Int16Array
from .events import SessionClosed, ToolCalled, ToolExecuted, UserStateChanged
from .output_buffer import BufferedAudioOutput, OutputBuffer
from .resample import Resampler

if TYPE_CHECKING:
    from .session import AgentSession


def thinking_cue(sample_rate: int = 24000) -> AudioFrame:
    """A soft two-note chime every 1.2 s (generated, so no file ships with the package)."""
    t = np.arange(int(0.09 * sample_rate)) / sample_rate
    fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01)
    low, high = (np.sin(2 * np.pi * hz * t) * fade for hz in (660.0, 880.0))
    gap = np.zeros(int(0.05 * sample_rate))
    rest = np.zeros(int(0.97 * sample_rate))
    wave = np.concatenate([low, gap, high, rest]) * 0.5
    return AudioFrame((wave * 32767).astype(np.int16), sample_rate, 1)


class _Loop:
    """One clip played in a loop at a gain; read from the transport's thread."""

    def __init__(self, clip: AudioFrame, gain: float, rate: int, channels: int) -> None:
        mono = clip.data[:, :1] if clip.channels > 1 else clip.data
        frame = AudioFrame(np.ascontiguousarray(mono), clip.sample_rate, 1, _checked=True)
        if clip.sample_rate != rate:
            rs = Resampler(clip.sample_rate, rate)
            parts = [p for p in (rs.push(frame), rs.flush()) if p is not None]
            frame = AudioFrame.concat(parts)
        samples = frame.data[:, 0].astype(np.float32) * gain
        self._samples = np.repeat(samples[:, None], channels, axis=1)
        self._pos = 0

    def read(self, n: int) -> np.ndarray:
        total = len(self._samples)
        idx = (self._pos + np.arange(n)) % total
        self._pos = (self._pos + n) % total
        return self._samples[idx]

    def rewind(self) -> None:
        self._pos = 0


class BackgroundAudio:
    """Attach to a started session: ``BackgroundAudio().attach(session)``."""

    def __init__(
        self,
        *,
        thinking: AudioFrame | None = None,
        thinking_gain: float = 0.25,
        thinking_delay_s: float = 0.3,
        ambient: AudioFrame | None = None,
        ambient_gain: float = 0.08,
        play_thinking: bool = True,
    ) -> None:
        self._thinking_clip = thinking if thinking is not None else thinking_cue()
        self.thinking_gain = thinking_gain
        self.thinking_delay_s = thinking_delay_s
        self._ambient_clip = ambient
        self.ambient_gain = ambient_gain
        self.play_thinking = play_thinking
        self._thinking: _Loop | None = None
        self._ambient: _Loop | None = None
        self._thinking_on = False
        self._running_tools: set[str] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._lock = threading.Lock()
        self._buffer: OutputBuffer | None = None
        self._cue_on = asyncio.Event()
        self._cue_off = asyncio.Event()
        self._cue_off.set()

    @property
    def thinking(self) -> bool:
        """True while the thinking cue is in the mix."""
        return self._thinking_on

    async def wait_thinking(self, on: bool) -> None:
        """Until the thinking cue is (or is no longer) in the mix."""
        await (self._cue_on if on else self._cue_off).wait()

    def attach(self, session: AgentSession) -> None:
        output = session.transport.audio_output
        if not isinstance(output, BufferedAudioOutput):
            raise TypeError(f"{type(output).__name__} has no core output buffer to mix into")
        buffer = output.buffer
        self._thinking = _Loop(
            self._thinking_clip, self.thinking_gain, buffer.sample_rate, buffer.channels
        )
        if self._ambient_clip is not None:
            self._ambient = _Loop(
                self._ambient_clip, self.ambient_gain, buffer.sample_rate, buffer.channels
            )
        self._buffer = buffer
        buffer.set_background(self._mix)
        session.on(ToolCalled, self._tool_started)
        session.on(ToolExecuted, self._tool_finished)
        session.on(UserStateChanged, self._user_state)
        session.on(SessionClosed, lambda _: self.detach())

    def detach(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._set_thinking(False)
        if self._buffer is not None:
            self._buffer.set_background(None)
            self._buffer = None

    # events (event loop) ------------------------------------------------------------------
    def _tool_started(self, event: ToolCalled) -> None:
        self._running_tools.add(event.call.call_id)
        if self.play_thinking and self._timer is None and not self._thinking_on:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.thinking_delay_s, self._thinking_due)

    def _tool_finished(self, event: ToolExecuted) -> None:
        self._running_tools.discard(event.call.call_id)
        if not self._running_tools:
            self._stop_thinking()

    def _user_state(self, event: UserStateChanged) -> None:
        if event.new == "speaking":
            self._stop_thinking()

    def _thinking_due(self) -> None:
        self._timer = None
        if self._running_tools:
            self._set_thinking(True)

    def _stop_thinking(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._set_thinking(False)

    def _set_thinking(self, on: bool) -> None:
        with self._lock:
            if on == self._thinking_on:
                return
            if on and self._thinking is not None:
                self._thinking.rewind()
            self._thinking_on = on
        (self._cue_on if on else self._cue_off).set()
        (self._cue_off if on else self._cue_on).clear()

    # mixing (transport thread) ------------------------------------------------------------
    def _mix(self, out: Int16Array) -> None:
        n = len(out)
        with self._lock:
            layers = [loop.read(n) for loop in (self._ambient,) if loop is not None]
            if self._thinking_on and self._thinking is not None:
                layers.append(self._thinking.read(n))
        if not layers:
            return
        mixed = out.astype(np.float32)
        for layer in layers:
            mixed += layer
        np.clip(mixed, -32768, 32767, out=mixed)
        out[:] = mixed.astype(np.int16)
