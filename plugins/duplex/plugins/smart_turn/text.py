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
import threading
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
from .queue import InferenceQueue, shared_lane

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
        text_queue: InferenceQueue | None = None,
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
        self.text_queue = text_queue or shared_text_queue()
        self.on_verdict = on_verdict
        self.max_audio_ms = self.audio_model.max_audio_ms
        self._text_failed_logged = False

    def verdict(self, audio: npt.NDArray[np.int16 | np.float32], sample_rate: int) -> TurnVerdict:
        """Blocking: both models, one after the other, on mono int16 or float audio."""
        x = _to_16k(audio, sample_rate)
        return self._decide(self.audio_model.probability(x, SAMPLE_RATE), self._text(x))

    def _text(self, x: npt.NDArray[np.float32]) -> TextScore | None:
        try:
            return self.text_model.verdict(x)
        except Exception as e:  # the text model must not end calls: the audio model decides
            self._text_failed(e)
            return None

    def _text_failed(self, e: BaseException) -> None:
        if not self._text_failed_logged:
            self._text_failed_logged = True
            log.warning("text end-of-turn score failed (%s: %s); using audio", type(e).__name__, e)

    def _decide(self, p_audio: float, score: TextScore | None) -> TurnVerdict:
        text = score.text if score is not None else None
        p_text = score.probability if score is not None else None
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
        """Both models at once: Smart Turn on the shared queue, the text on its own lane.

        The text pass (a Whisper transcription and a decoder pass) takes several times
        Smart Turn's ~40 ms; run side by side, a decision costs about the text pass
        alone, and one caller's text pass does not hold up another's Smart Turn.
        """
        x = _to_16k(audio, sample_rate)  # also a copy: the caller's buffer may change
        scores: list[TextScore | None] = []

        def text_job() -> float:
            score = self._text(x)
            scores.append(score)
            p = score.probability if score is not None else None
            return float("nan") if p is None else p

        out: Future[float] = Future()
        fa = self.queue.submit(lambda: self.audio_model.probability(x, SAMPLE_RATE))
        ft = self.text_queue.submit(text_job)

        def withdraw(f: Future[float]) -> None:
            if f.cancelled():  # the detector heard more speech: drop both questions
                fa.cancel()
                ft.cancel()

        once = threading.Lock()  # both callbacks may see both done, on two threads

        def settle(_f: Future[float]) -> None:
            if not (fa.done() and ft.done()) or not once.acquire(blocking=False):
                return
            if fa.cancelled() or fa.exception() is not None:
                exc = fa.exception() if not fa.cancelled() else None
                _fail(out, exc or RuntimeError("Smart Turn request withdrawn"))
                return
            if not ft.cancelled() and ft.exception() is not None:
                self._text_failed(ft.exception() or RuntimeError("text lane failed"))
            score = scores[0] if scores else None
            try:
                p = self._decide(fa.result(), score).probability
            except Exception as e:  # a failing on_verdict must not hang the detector
                _fail(out, e)
                return
            if out.set_running_or_notify_cancel():
                out.set_result(p)

        out.add_done_callback(withdraw)
        fa.add_done_callback(settle)
        ft.add_done_callback(settle)
        return out


def _fail(out: Future[float], exc: BaseException) -> None:
    if out.set_running_or_notify_cancel():
        out.set_exception(exc)


def _to_16k(audio: npt.NDArray[np.int16 | np.float32], sample_rate: int) -> npt.NDArray[np.float32]:
    """Mono float audio at 16 kHz (a new array) from int16 or float audio at any rate."""
    raw = np.asarray(audio).reshape(-1)
    scale = 1.0 / 32768.0 if raw.dtype == np.int16 else 1.0
    x: npt.NDArray[np.float32] = raw.astype(np.float32) * np.float32(scale)
    if sample_rate != SAMPLE_RATE:
        x = np.asarray(soxr.resample(x, sample_rate, SAMPLE_RATE, quality="HQ"), np.float32)
    return x


def shared_text_queue() -> InferenceQueue:
    """The process-wide lane for text end-of-turn passes (one worker, bounded)."""
    return shared_lane("turn-text")
