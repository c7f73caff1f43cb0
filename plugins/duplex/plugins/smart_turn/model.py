"""`SmartTurn`: the end-of-turn model behind the core's `EndOfTurnModel` interface."""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soxr

from duplex.agents.audio import sound_end
from duplex.agents.vad import EndOfTurnModel

from ._model import resolve_model_path, shared_session
from .features import SAMPLE_RATE, WINDOW_SAMPLES, features
from .queue import InferenceQueue, shared_queue


class SmartTurn(EndOfTurnModel):
    """Probability that the audio so far is a finished turn (the last 8 s are used).

    Calls from every session go through one `InferenceQueue` per process, so a
    burst of pauses on many calls is served one after another instead of
    oversubscribing the cores.

    The model learnt turns that end ~200 ms after the last word (pipecat asks it
    after 200 ms of Silero silence). A VAD with a longer hangover (WebRTC VAD holds
    on ~100-150 ms) would show it more silence, which it reads as "complete", so
    the clip is cut ``trailing_ms`` after its last sound (30 dB below its peak).
    """

    max_audio_ms = 1000.0 * WINDOW_SAMPLES / SAMPLE_RATE

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        threads: int = 1,
        queue: InferenceQueue | None = None,
        trailing_ms: float | None = 200.0,
    ) -> None:
        self.model_path = resolve_model_path(model_path)
        self._session = shared_session(self.model_path, threads)
        self.queue = queue or shared_queue()
        self.trailing_ms = trailing_ms

    def probability(self, audio: npt.NDArray[np.int16 | np.float32], sample_rate: int) -> float:
        """Blocking: one inference on mono audio (int16, or float in [-1, 1])."""
        raw = np.asarray(audio).reshape(-1)
        scale = 1.0 / 32768.0 if raw.dtype == np.int16 else 1.0
        x: npt.NDArray[np.float32] = raw.astype(np.float32) * np.float32(scale)
        keep = int(np.ceil(WINDOW_SAMPLES * sample_rate / SAMPLE_RATE))
        x = x[-keep:]
        if sample_rate != SAMPLE_RATE:
            x = soxr.resample(x, sample_rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
        if self.trailing_ms is not None:
            x = _cut_trailing_silence(x, self.trailing_ms)
        out = self._session.run(None, {"input_features": features(x)})
        # The exported graph ends in a sigmoid: the output already is a probability.
        return float(np.asarray(out[0]).reshape(-1)[0])

    def predict(self, audio: npt.NDArray[np.int16 | np.float32], sample_rate: int) -> Future[float]:
        clip = np.array(audio, copy=True)  # the caller's buffer may change before the worker runs
        return self.queue.submit(lambda: self.probability(clip, sample_rate))


def _cut_trailing_silence(x: npt.NDArray[np.float32], keep_ms: float) -> npt.NDArray[np.float32]:
    end = sound_end(x, SAMPLE_RATE)
    return x if end is None else x[: end + int(keep_ms * SAMPLE_RATE / 1000)]
