"""Sentence cutting for streamed speech, and mapping played audio back to the words heard."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

# A sentence ends at . ! ? … (optionally closed by quotes or brackets) followed by space,
# or at a line break. "3.5" and "e.g.x" stay whole because a space must follow.
_END = re.compile(r"(?<=[.!?…])[\"')\]]*\s+|\n+")
# A clause ends at , ; : or a dash followed by space ("1,000" stays whole).
_CLAUSE = re.compile(r"(?<=[,;:—–])\s+|\s+[—–]\s+")


class SentenceSplitter:
    """Cuts streamed text into sentences so speech can start before the reply is complete.

    ``min_chars`` keeps very short fragments ("Hi.", "Mr.") attached to what follows,
    trading a few milliseconds for a natural prosody. A run-on sentence longer than
    ``max_chars`` is cut at its last comma (or space) so speech still starts early.
    The reply's first piece may be a clause ("Sure, ..." / "You said: ...") of at
    least ``first_clause_chars``: it is synthesised and heard while the rest of the
    sentence is still being made. ``first_clause_chars=None`` waits for a sentence.
    """

    def __init__(
        self, min_chars: int = 4, max_chars: int = 200, first_clause_chars: int | None = 8
    ) -> None:
        self._buf = ""
        self._min = min_chars
        self._max = max_chars
        self._first_clause = first_clause_chars
        self._yielded = False

    def push(self, text: str) -> Iterator[str]:
        for piece in self._pieces(text):
            self._yielded = True
            yield piece

    def _first_clause_end(self) -> int | None:
        if self._yielded or self._first_clause is None:
            return None
        for m in _CLAUSE.finditer(self._buf):
            if len(self._buf[: m.start()].strip()) >= self._first_clause:
                return m.end()
        return None

    def _pieces(self, text: str) -> Iterator[str]:
        self._buf += text
        start = 0
        cut = self._first_clause_end()
        sentence = _END.search(self._buf)
        if cut is not None and (sentence is None or cut < sentence.end()):
            yield self._buf[:cut].strip()
            self._buf = self._buf[cut:]
        for m in _END.finditer(self._buf):
            piece = self._buf[start : m.end()].strip()
            if len(piece) < self._min:
                continue
            yield piece
            start = m.end()
        self._buf = self._buf[start:]
        while len(self._buf) > self._max:
            head = self._buf[: self._max]
            cut = max(head.rfind(", "), head.rfind("; "), head.rfind(": "))
            cut = cut + 1 if cut > self._min else head.rfind(" ")
            if cut <= self._min:
                break  # one huge word: wait for a boundary
            yield self._buf[:cut].strip()
            self._buf = self._buf[cut:].lstrip()

    def flush(self) -> str | None:
        rest, self._buf = self._buf.strip(), ""
        return rest or None


@dataclass
class SpokenSegment:
    """One sentence as sent to the caller: where its audio sits in the item's audio."""

    text: str
    start_ms: float
    end_ms: float


def heard_text(segments: Sequence[SpokenSegment], audio_end_ms: float) -> str:
    """The words a caller heard when playback stopped at ``audio_end_ms``.

    Sentences that finished playing are kept whole; within the sentence that was
    playing, words are kept in proportion to the share of its audio played, rounded
    down to whole words (speech rate is close enough to even within one sentence).
    """
    kept: list[str] = []
    for seg in segments:
        if audio_end_ms >= seg.end_ms:
            kept.append(seg.text)
            continue
        if audio_end_ms > seg.start_ms and seg.end_ms > seg.start_ms:
            words = seg.text.split()
            share = (audio_end_ms - seg.start_ms) / (seg.end_ms - seg.start_ms)
            n = int(len(words) * share)
            if n:
                kept.append(" ".join(words[:n]))
        break
    return " ".join(kept)
