"""WebRTC's voice activity detector (GMM based) as a `duplex.agents.vad.VAD`.

Cheap (a microsecond or two per frame) and dependency-light, but it answers
"voiced or not" only and takes exact 10/20/30 ms frames at 8/16/32/48 kHz; the
`TurnDetector` chunks and resamples for it. Use Silero where noise is likely.
"""

from __future__ import annotations

import webrtcvad
from duplex.agents.audio import AudioFrame
from duplex.agents.errors import AudioFormatError, ConfigurationError
from duplex.agents.vad import VAD, VADStream

__all__ = ["NATIVE_RATES", "SUPPORTED_FRAME_MS", "SUPPORTED_RATES", "WebRTCVAD"]

#: The only rates and frame lengths the C library accepts.
SUPPORTED_RATES = (8000, 16000, 32000, 48000)
SUPPORTED_FRAME_MS = (10, 20, 30)
#: Rates the VAD runs at when given audio at them (48 kHz is cheaper resampled to 16 kHz).
NATIVE_RATES = (8000, 16000, 32000)


class WebRTCVAD(VAD):
    """``mode`` 0 (least aggressive) to 3 (rejects the most non-speech).

    With no ``sample_rate`` it runs at the rate of the audio it is given when that
    is one of `NATIVE_RATES` (telephony's 8 kHz, a 16 kHz microphone: no resampling
    at all), else at 16 kHz. 48 kHz is accepted by the library but not chosen: its
    internal 48->8 kHz filter costs ~18 us per 20 ms frame, more than resampling
    to 16 kHz and classifying there (~12 us, measured). A given ``sample_rate`` is kept.
    """

    def __init__(self, mode: int = 2, sample_rate: int | None = None, frame_ms: int = 20) -> None:
        if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 3:
            raise ConfigurationError(f"webrtcvad mode must be an int 0..3, got {mode!r}")
        self._native = sample_rate is None
        if sample_rate is None:
            sample_rate = 16000
        if sample_rate not in SUPPORTED_RATES:
            raise ConfigurationError(
                f"webrtcvad runs at {SUPPORTED_RATES} Hz only, got {sample_rate!r}"
            )
        if frame_ms not in SUPPORTED_FRAME_MS:
            raise ConfigurationError(
                f"webrtcvad takes {SUPPORTED_FRAME_MS} ms frames only, got {frame_ms!r}"
            )
        self.mode = mode
        self.sample_rate = sample_rate
        self._frame_ms = frame_ms
        self.frame_samples = sample_rate * frame_ms // 1000

    def stream(self) -> VADStream:
        return WebRTCVADStream(self)

    def for_rate(self, sample_rate: int) -> VAD:
        if not self._native or sample_rate not in NATIVE_RATES:
            return self
        if sample_rate == self.sample_rate:
            return self
        return WebRTCVAD(self.mode, sample_rate, self._frame_ms)


class WebRTCVADStream(VADStream):
    """One C detector per stream: it keeps adaptive noise estimates between frames."""

    def __init__(self, vad: WebRTCVAD) -> None:
        self._vad = vad
        self._rate = vad.sample_rate
        self._samples = vad.frame_samples
        self._detector = webrtcvad.Vad(vad.mode)

    def process(self, frame: AudioFrame) -> float:
        if frame.channels != 1 or frame.sample_rate != self._rate:
            raise AudioFormatError(
                f"webrtcvad stream expects mono {self._rate} Hz, got "
                f"{frame.channels} ch at {frame.sample_rate} Hz"
            )
        if frame.data.shape[0] != self._samples:
            raise AudioFormatError(
                f"webrtcvad stream expects frames of {self._samples} samples, "
                f"got {frame.samples_per_channel}"
            )
        voiced = self._detector.is_speech(frame.to_pcm16(), self._rate, self._samples)
        return 1.0 if voiced else 0.0

    def reset(self) -> None:
        self._detector = webrtcvad.Vad(self._vad.mode)
