"""The text end-of-turn score alone, on the cut-off set, and the rules built on it.

For each unfinished half (speech up to the hesitation) and each complete sentence,
`WhisperTextTurn` transcribes the clip (with 300 ms of silence after the last
word, about what the detector hands the model) and scores the probability that a
sentence-final mark follows the words it heard (trailing words the audio does
not hold are dropped first, `duplex.plugins.whisper.heard`; the AUC line also
gives the score of every word, as before that check). The table says how often each group
scores at or above a threshold (a half that does is one the text would let the
audio model cut off), and the AUC (the chance a complete sentence outscores a
half). It also times one combined verdict (Smart Turn + transcription + score)
on an idle worker, the delay the combination adds to every decision.
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import time

import numpy as np
import numpy.typing as npt

from duplex.agents.vad import TurnOptions

from .offline_speech import RATE, Utterance

INTRO = """### The text end-of-turn score alone

`WhisperTextTurn` (`bench/offline_text.py`): Whisper transcribes each clip (300 ms
of silence after the last word), drops trailing words its own alignment gives no
sound (under 40 ms: "Please send the invoice to *me*."), and its decoder,
conditioned on faint noise rather than the audio, gives the probability that `.`,
`?` or `!` follows the words. How often each group scores at least the threshold:

"""
THRESHOLDS = (0.03, 0.05, 0.1, 0.2, 0.3, 0.5)
#: Other "unfinished" bounds the cut-off section also tries (the default is 0.05).
VETO_BOUNDS = (0.1,)


def combined(
    smart: TurnOptions,
    *,
    unfinished_below: float | None = None,
    pause_ms: float | None = None,
    every_word: bool = False,
) -> TurnOptions:
    """``smart``'s options with Smart Turn combined with the Whisper text score.

    ``unfinished_below`` and ``pause_ms`` override `SmartTurnText`'s veto bound and
    the pause after which the detector asks; ``every_word`` scores Whisper's words
    without dropping the unheard last ones (the rule before that check).
    """
    from duplex.plugins.smart_turn import SmartTurn, SmartTurnText
    from duplex.plugins.whisper.turn import WhisperTextTurn

    audio = smart.end_of_turn
    if not isinstance(audio, SmartTurn):
        raise SystemExit("the text rule needs Smart Turn")
    text = WhisperTextTurn(unheard_ms=None) if every_word else WhisperTextTurn()
    model = (
        SmartTurnText(audio, text)
        if unfinished_below is None
        else SmartTurnText(audio, text, unfinished_below=unfinished_below)
    )
    pause = smart.end_of_turn_pause_ms if pause_ms is None else pause_ms
    return dataclasses.replace(smart, end_of_turn=model, end_of_turn_pause_ms=pause)


def _auc(pos: list[float], neg: list[float]) -> float:
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / max(1, len(pos) * len(neg))


async def table(
    smart: TurnOptions, paused: dict[str, list[Utterance]], complete: list[Utterance]
) -> str:
    from duplex.plugins.smart_turn import SmartTurnText
    from duplex.plugins.whisper.turn import WhisperTextTurn

    scorer = await asyncio.to_thread(WhisperTextTurn)
    every_word = WhisperTextTurn(unheard_ms=None)  # the same loaded model
    lead = np.zeros(RATE // 2, np.int16)
    trailing = np.zeros(3 * RATE // 10, np.int16)

    def clip(a: npt.NDArray[np.int16]) -> npt.NDArray[np.float32]:
        out: npt.NDArray[np.float32] = np.concatenate([lead, a, trailing]).astype(np.float32)
        return out / np.float32(32768.0)

    groups = {
        f"unfinished halves: {s}": [clip(u.audio[: u.gap[0]]) for u in us if u.gap]
        for s, us in paused.items()
    }
    groups["complete sentences"] = [clip(u.audio) for u in complete]
    scores: dict[str, list[float]] = {}
    before: dict[str, list[float]] = {}  # every word scored, as before the unheard check
    for label, clips in groups.items():
        for text_model, out in ((scorer, scores), (every_word, before)):
            verdicts = [await asyncio.to_thread(text_model.verdict, c) for c in clips]
            out[label] = [v.probability if v.probability is not None else 0.0 for v in verdicts]
    head = "| text score ≥ | " + " | ".join(groups) + " |\n" + f"|---|{'---|' * len(groups)}"
    rows = [
        f"| {t} | "
        + " | ".join(
            f"{sum(p >= t for p in ps)}/{len(ps)} ({100 * sum(p >= t for p in ps) / len(ps):.0f} %)"
            for ps in scores.values()
        )
        + " |"
        for t in THRESHOLDS
    ]

    def aucs(by_group: dict[str, list[float]]) -> str:
        whole = by_group["complete sentences"]
        return ", ".join(
            f"{label.split(': ')[-1]} {_auc(whole, ps):.2f}"
            for label, ps in by_group.items()
            if label != "complete sentences"
        )

    # One combined verdict, as the detector's worker runs it (idle queue, this machine now).
    model = combined(smart).end_of_turn
    assert isinstance(model, SmartTurnText)
    times = []
    for c in groups["complete sentences"]:
        t0 = time.perf_counter()
        await asyncio.to_thread(model.verdict, c, RATE)
        times.append(1000.0 * (time.perf_counter() - t0))
    return "\n".join(
        [
            head,
            *rows,
            "",
            f"AUC (complete sentences above halves): {aucs(scores)}; scoring every word "
            f"Whisper wrote: {aucs(before)}. One combined verdict (Smart Turn "
            f"+ transcription + score) took {statistics.median(times):.0f} ms p50, "
            f"{max(times):.0f} ms max (load average {_load():.1f}).",
        ]
    )


def _load() -> float:
    import os

    return os.getloadavg()[0]
