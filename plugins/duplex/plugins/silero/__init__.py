"""Silero VAD (a small LSTM, ONNX) as a `duplex.agents.vad.VAD`.

Far more robust to noise than webrtcvad, ~0.1 ms per 32 ms chunk on one core.
The model is stateful: each call takes 64 samples of the previous chunk as
context (32 at 8 kHz) plus 512 new samples (256), and returns an LSTM state
that the next call must get back; without the context it never fires.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from duplex.agents.audio import AudioFrame
from duplex.agents.errors import AudioFormatError, ConfigurationError
from duplex.agents.vad import VAD, VADStream

from ._model import bundled_model_path, input_names, resolve_model_path, shared_session

__all__ = ["SileroVAD", "SileroVADStream", "bundled_model_path"]

#: sample rate -> (new samples per call, context samples carried over)
_WINDOWS = {16000: (512, 64), 8000: (256, 32)}
_STATE_SHAPE = (2, 1, 128)


class SileroVAD(VAD):
    """Loads (or reuses) the process-wide model session; streams are cheap."""

    def __init__(self, model_path: str | Path | None = None, sample_rate: int = 16000) -> None:
        if sample_rate not in _WINDOWS:
            raise ConfigurationError(
                f"Silero VAD runs at {sorted(_WINDOWS)} Hz only, got {sample_rate!r}"
            )
        self.model_path = resolve_model_path(model_path)
        self._session = shared_session(self.model_path)
        missing = {"input", "state", "sr"} - input_names(self._session)
        if missing:
            raise ConfigurationError(
                f"{str(self.model_path)!r} is not a Silero VAD v5 model "
                f"(it lacks inputs {sorted(missing)})"
            )
        self.sample_rate = sample_rate
        self.frame_samples, self.context_samples = _WINDOWS[sample_rate]

    def stream(self) -> SileroVADStream:
        return SileroVADStream(self)


class SileroVADStream(VADStream):
    """Carries the context samples and LSTM state from one chunk to the next."""

    def __init__(self, vad: SileroVAD) -> None:
        self._vad = vad
        self._session = vad._session
        self._sr = np.array(vad.sample_rate, dtype=np.int64)
        ctx = vad.context_samples
        self._input: npt.NDArray[np.float32] = np.zeros((1, ctx + vad.frame_samples), np.float32)
        self._state: npt.NDArray[np.float32] = np.zeros(_STATE_SHAPE, np.float32)

    def process(self, frame: AudioFrame) -> float:
        vad = self._vad
        if frame.channels != 1 or frame.sample_rate != vad.sample_rate:
            raise AudioFormatError(
                f"Silero stream expects mono {vad.sample_rate} Hz, got "
                f"{frame.channels} ch at {frame.sample_rate} Hz"
            )
        if frame.samples_per_channel != vad.frame_samples:
            raise AudioFormatError(
                f"Silero stream expects chunks of {vad.frame_samples} samples, "
                f"got {frame.samples_per_channel}"
            )
        ctx = vad.context_samples
        buf = self._input
        # The tail of the previous call's input becomes this call's context.
        buf[0, :ctx] = buf[0, -ctx:]
        buf[0, ctx:] = frame.data[:, 0]
        buf[0, ctx:] *= np.float32(1.0 / 32768.0)
        out, state = self._session.run(None, {"input": buf, "state": self._state, "sr": self._sr})
        self._state = np.asarray(state, dtype=np.float32)
        return float(np.asarray(out).reshape(-1)[0])

    def reset(self) -> None:
        self._input.fill(0.0)
        self._state = np.zeros(_STATE_SHAPE, np.float32)
