"""The words at a turn's end that the audio holds: Whisper's unheard last words removed.

Cut off in fluent speech ("Please send the invoice to | my office address"),
Whisper tiny.en often finishes the sentence from its language model alone
("... to me."), and the text end-of-turn score then calls a hesitation complete.
Such a word has no sound of its own: forced into the speech with Whisper's own
cross-attention alignment (CTranslate2 ``align``, DTW over the alignment heads),
it gets a span of zero frames. A word that was spoken gets its duration.

Measured on the bench's sets (`bench/offline_text.py`): the last word's aligned
span is 0 ms for the four halves that end in a word nobody said, and at least
100 ms for every last word actually spoken (complete sentences, halves, and 25
held-out short sentences such as "I did it." or "How are you?", ≥ 120 ms).
So a trailing word shorter than `UNHEARD_MS` is dropped before scoring.

The speech's end is found from the clip's level (as Smart Turn's trailing cut
does); the alignment may run `MARGIN_S` past it, so a weak final consonant is
not cut off. Where noise hides the end, the whole clip counts as speech and no
word is dropped: the score is then what it was without this check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from duplex.agents.audio import sound_end

from .model import RATE, encode_clip, greedy_text

#: A trailing word whose aligned span is shorter than this had no sound of its own.
UNHEARD_MS = 40.0
#: How far past the level-based end of speech the words may be aligned.
MARGIN_S = 0.1
#: Level below the clip's peak (-30 dB) that counts as silence.
_QUIET = 0.03
#: Characters of a "word" that is only punctuation (the aligner splits those off).
_MARKS = " .,?!…;:-\"'"


@dataclass(frozen=True)
class Heard:
    """A transcript split into the words the audio holds and the unheard words after them."""

    text: str
    unheard: str = ""


def speech_end_s(audio: npt.NDArray[np.float32]) -> float:
    """Seconds to the end of the last 10 ms window within 30 dB of the clip's peak."""
    end = sound_end(audio, RATE, below_peak=_QUIET)
    return (len(audio) if end is None else end) / RATE


def transcribe_heard(
    model: Any,
    tokenizer: Any,
    audio: npt.NDArray[np.float32],
    *,
    unheard_ms: float | None = UNHEARD_MS,
    no_speech_threshold: float = 0.6,
) -> Heard:
    """One greedy pass over a short 16 kHz clip, then the unheard last words split off.

    The clip is encoded once; the decoder and the aligner share the encoding.
    ``unheard_ms=None`` keeps every word (no alignment pass). Blocking: run it
    off the event loop.
    """
    if audio.size == 0:
        return Heard("")
    feats, encoded = encode_clip(model, audio)
    text = greedy_text(
        model, tokenizer, encoded, len(audio), no_speech_threshold=no_speech_threshold
    )
    if not text or unheard_ms is None:
        return Heard(text)
    ids = tokenizer.encode(" " + text)
    frames = min(feats.shape[2], int((speech_end_s(audio) + MARGIN_S) * 100))
    words = model.find_alignment(tokenizer, [ids], encoded, frames)[0]
    spoken = [i for i, w in enumerate(words) if str(w["word"]).strip(_MARKS)]
    keep = len(spoken)
    while keep > 0 and _span_ms(words[spoken[keep - 1]]) < unheard_ms:
        keep -= 1
    if keep == len(spoken):
        return Heard(text)
    end = spoken[keep - 1] + 1 if keep else 0  # punctuation after the last heard word goes too
    return Heard(_join(words[:end]), _join(words[end:]))


def _span_ms(word: dict[str, Any]) -> float:
    return 1000.0 * (float(word["end"]) - float(word["start"]))


def _join(words: list[dict[str, Any]]) -> str:
    return "".join(str(w["word"]) for w in words).strip()
