"""Smart Turn (audio) combined with a text end-of-turn score, asked together at a pause.

Smart Turn alone calls many hesitations complete ("I would like to book a table
for …"): the words before the pause often sound finished. What was said tells
them apart: no sentence ends on "for". A text scorer (`WhisperTextTurn` by
default) transcribes the turn's end and gives the probability that the words
end a sentence. The rule:

- text says unfinished (below ``unfinished_below``): hold the turn, whatever the audio says;
- text says strongly complete (at least ``complete_above``): end it, even if the audio
  model hesitates (it holds some finished sentences to the 1.5 s limit);
- otherwise the audio model decides, as before.

The result is one probability for the `TurnDetector` (whose threshold, 0.5 by
default, must lie between the two text bounds): the audio model's, lowered to
the text's when the text vetoes, raised to it when the text is strongly
complete. Both models run in one job on the process's shared end-of-turn worker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import soxr

from duplex.agents.errors import ConfigurationError
from duplex.agents.vad import EndOfTurnModel

from .features import SAMPLE_RATE
from .model import SmartTurn
from .queue import InferenceQueue

log = logging.getLogger(__name__)


class TextScore(Protocol):
    @property
    def text(self) -> str: ...
    @property
    def probability(self) -> float | None: ...


class TextScorer(Protocol):
    """Transcribes 16 kHz float audio and scores how likely its words end a sentence."""

    def verdict(self, audio: npt.NDArray[np.float32]) -> TextScore: ...


@dataclass(frozen=True)
class TurnVerdict:
    #: Smart Turn's probability that the turn is complete.
    audio: float
    #: What the text scorer heard (None when it failed or was not asked).
    text: str | None
    #: Its probability that the words end a sentence (None: no words, or it failed).
    text_probability: float | None
    #: The combined probability the detector compares with its threshold.
    probability: float


class SmartTurnText(EndOfTurnModel):
    """`SmartTurn` with a text veto / override; see the module docstring for the rule.

    ``on_verdict`` (called on the worker thread) sees each decision's parts, for
    logs and benchmarks. A text scorer that fails falls back to the audio model
    alone for that pause (logged once).
    """

    def __init__(
        self,
        audio_model: SmartTurn | None = None,
        text_model: TextScorer | None = None,
        *,
        unfinished_below: float = 0.05,
        complete_above: float = 0.5,
        queue: InferenceQueue | None = None,
        on_verdict: Callable[[TurnVerdict], None] | None = None,
    ) -> None:
        if not 0.0 <= unfinished_below <= complete_above <= 1.0:
            raise ConfigurationError(
                "need 0 <= unfinished_below <= complete_above <= 1, got "
                f"{unfinished_below} and {complete_above}"
            )
        self.audio_model = audio_model or SmartTurn()
        if text_model is None:
            from duplex.plugins.whisper.turn import WhisperTextTurn

            text_model = WhisperTextTurn()
        self.text_model = text_model
        self.unfinished_below = unfinished_below
        self.complete_above = complete_above
        self.queue = queue or self.audio_model.queue
        self.on_verdict = on_verdict
        self.max_audio_ms = self.audio_model.max_audio_ms
        self._text_failed_logged = False

    def verdict(self, audio: npt.NDArray[np.int16 | np.float32], sample_rate: int) -> TurnVerdict:
        """Blocking: both models on mono audio (int16, or float in [-1, 1])."""
        raw = np.asarray(audio).reshape(-1)
        scale = 1.0 / 32768.0 if raw.dtype == np.int16 else 1.0
        x: npt.NDArray[np.float32] = raw.astype(np.float32) * np.float32(scale)
        if sample_rate != SAMPLE_RATE:
            x = np.asarray(soxr.resample(x, sample_rate, SAMPLE_RATE, quality="HQ"), np.float32)
        p_audio = self.audio_model.probability(x, SAMPLE_RATE)
        text: str | None = None
        p_text: float | None = None
        try:
            score = self.text_model.verdict(x)
            text, p_text = score.text, score.probability
        except Exception as e:  # the text model must not end calls: the audio model decides
            if not self._text_failed_logged:
                self._text_failed_logged = True
                log.warning(
                    "text end-of-turn score failed (%s: %s); using audio", type(e).__name__, e
                )
        verdict = TurnVerdict(p_audio, text, p_text, self.combine(p_audio, p_text))
        if self.on_verdict is not None:
            self.on_verdict(verdict)
        return verdict

    def combine(self, p_audio: float, p_text: float | None) -> float:
        """The rule: text veto below ``unfinished_below``, text override from ``complete_above``."""
        if p_text is None:
            return p_audio
        if p_text < self.unfinished_below:
            return min(p_audio, p_text)
        if p_text >= self.complete_above:
            return max(p_audio, p_text)
        return p_audio

    def probability(self, audio: npt.NDArray[np.int16 | np.float32], sample_rate: int) -> float:
        return self.verdict(audio, sample_rate).probability

    def predict(self, audio: npt.NDArray[np.int16 | np.float32], sample_rate: int) -> Future[float]:
        clip = np.array(audio, copy=True)  # the caller's buffer may change before the worker runs
        return self.queue.submit(lambda: self.probability(clip, sample_rate))
