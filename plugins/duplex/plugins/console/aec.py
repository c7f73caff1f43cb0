"""Echo cancellation with WebRTC's audio processing module (as shipped in livekit's rtc SDK).

Without it, the agent hears its own voice from the speaker and interrupts
itself. The speaker signal is the reverse stream; the module needs exact 10 ms
frames and the delay between playing a sample and capturing its echo.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from livekit import rtc


class EchoCanceller:
    """Not thread-safe: call both methods from the one audio callback thread."""

    def __init__(
        self,
        sample_rate: int,
        *,
        noise_suppression: bool = True,
        high_pass_filter: bool = True,
        auto_gain_control: bool = False,
    ) -> None:
        if sample_rate % 100:
            raise ValueError("echo cancellation needs a rate with whole 10 ms frames")
        self.sample_rate = sample_rate
        self.block = sample_rate // 100
        self._apm = rtc.AudioProcessingModule(
            echo_cancellation=True,
            noise_suppression=noise_suppression,
            high_pass_filter=high_pass_filter,
            auto_gain_control=auto_gain_control,
        )
        self._delay_ms = -1

    @property
    def delay_ms(self) -> int:
        """The speaker-to-microphone delay last given to the canceller."""
        return self._delay_ms

    def set_delay_ms(self, delay_ms: float) -> None:
        d = max(0, min(500, round(delay_ms)))
        if abs(d - self._delay_ms) >= 5:  # the module adapts; only tell it about real changes
            self._apm.set_stream_delay_ms(d)
            self._delay_ms = d

    def far_end(self, played: npt.NDArray[np.int16]) -> None:
        """What the speaker is about to play (mono int16, a whole number of 10 ms blocks)."""
        for start in range(0, len(played), self.block):
            chunk = played[start : start + self.block]
            frame = rtc.AudioFrame(chunk.tobytes(), self.sample_rate, 1, len(chunk))
            self._apm.process_reverse_stream(frame)

    def near_end(self, captured: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        """The microphone signal with the speaker's echo removed."""
        out = np.empty_like(captured)
        for start in range(0, len(captured), self.block):
            chunk = captured[start : start + self.block]
            frame = rtc.AudioFrame(chunk.tobytes(), self.sample_rate, 1, len(chunk))
            self._apm.process_stream(frame)
            out[start : start + len(chunk)] = np.frombuffer(frame.data, dtype=np.int16)
        return out
