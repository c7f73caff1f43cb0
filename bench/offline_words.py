"""What a transcript check could add to Smart Turn (measured only; not built).

For each unfinished half and complete sentence of the cut-off set, Whisper
(the offline default's STT) transcribes the audio up to the pause, and the last
word is checked against a fixed list of English closed-class words that rarely
end a sentence (articles, prepositions, conjunctions, possessive determiners).
The table shows how often the model alone calls the clip complete, and how often
it would with "complete" overruled when the transcript ends on such a word.
"""

from __future__ import annotations

import asyncio
import re

import numpy as np
import numpy.typing as npt

from duplex.agents.vad import EndOfTurnModel

from .offline_speech import RATE, Utterance

#: Words after which an English sentence almost never ends.
CLOSED_CLASS = frozenset(
    {
        *("a", "an", "the", "my", "your", "our", "their"),
        *("of", "for", "to", "with", "from", "near", "into", "onto", "at", "by", "than"),
        *("and", "or", "but", "nor", "if", "because"),
    }
)


def last_word(text: str) -> str:
    words = re.findall(r"[a-z']+", text.lower())
    return words[-1] if words else ""


async def table(
    model: EndOfTurnModel, paused: dict[str, list[Utterance]], complete: list[Utterance]
) -> str:
    from duplex.plugins.whisper import WhisperSTT
    from duplex.plugins.whisper.model import transcribe_clip

    stt = WhisperSTT()
    await stt.prepare()
    whisper = stt.model
    lead = np.zeros(RATE // 2, np.int16)
    trailing = np.zeros(RATE // 5, np.int16)  # 200 ms, as the default detector shows it

    async def judge(audio: npt.NDArray[np.int16]) -> tuple[float, str]:
        clip = np.concatenate([lead, audio, trailing])
        p = await asyncio.wrap_future(model.predict(clip, RATE))
        text = await asyncio.to_thread(transcribe_clip, whisper, audio.astype(np.float32) / 32768.0)
        return p, last_word(text)

    rows = []
    groups = [
        (f"unfinished halves: {s}", [u.audio[: u.gap[0]] for u in us if u.gap])
        for s, us in paused.items()
    ]
    groups.append(("complete sentences", [u.audio for u in complete]))
    for label, clips in groups:
        verdicts = [await judge(a) for a in clips]
        alone = sum(p >= 0.5 for p, _ in verdicts)
        checked = sum(p >= 0.5 and w not in CLOSED_CLASS for p, w in verdicts)
        n = len(verdicts)
        rows.append(
            f"| {label} | {alone}/{n} ({100 * alone / n:.0f} %) "
            f"| {checked}/{n} ({100 * checked / n:.0f} %) |"
        )
    head = (
        "| clips (200 ms of silence after the last word) | called complete: Smart Turn "
        "| … unless Whisper's last word is closed-class |\n|---|---|---|"
    )
    return "\n".join([head, *rows])
