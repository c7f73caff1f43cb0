"""WhisperSTT alone: how long the final transcript takes after the turn ends, by utterance length.

Utterances of about 3, 6 and 10 s (generated sentences with short pauses between
them) are fed in real time, then the 300 ms of silence a turn detector would
wait, then `finish` is timed. Also reported: the audio given to the model per
second of speech (1.0 = each sample transcribed once; previews for captions add
to it), which stays flat as utterances grow if nothing is re-transcribed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np

from duplex.agents.audio import AudioFrame

from .offline_speech import RATE, Utterance

FRAME = RATE // 50
TARGETS_S = (3.0, 6.0, 10.0)


@dataclass
class SttRow:
    seconds: float
    final_ms: list[float]
    transcribed_ratio: list[float]

    def markdown_row(self) -> str:
        fm = sorted(self.final_ms)
        med = fm[len(fm) // 2]
        ratio = sum(self.transcribed_ratio) / len(self.transcribed_ratio)
        return f"| {self.seconds:.1f} | {len(fm)} | {med:.0f} | {max(fm):.0f} | {ratio:.2f} |"


MARKDOWN_HEADER = (
    "| utterance (s) | runs | turn end → final transcript p50 (ms) | max | "
    "audio transcribed per audio spoken |\n|---|---|---|---|---|"
)


def _build(utts: list[Utterance], seconds: float, offset: int) -> np.ndarray:
    parts: list[np.ndarray] = []
    total = 0
    i = offset
    gap = np.zeros(int(0.25 * RATE), np.int16)
    while total < seconds * RATE:
        a = utts[i % len(utts)].audio
        parts += [a, gap]
        total += len(a) + len(gap)
        i += 1
    return np.concatenate(parts[:-1])


async def measure(utts: list[Utterance], runs: int = 2) -> list[SttRow]:
    from duplex.plugins.whisper import WhisperSTT

    stt = WhisperSTT()
    session = await stt.connect()
    rows = []
    for seconds in TARGETS_S:
        row = SttRow(seconds, [], [])
        for r in range(runs):
            audio = np.concatenate([_build(utts, seconds, r), np.zeros(int(0.3 * RATE), np.int16)])
            utt = session.begin(lambda _t: None)
            deadline = time.monotonic()
            for i in range(0, len(audio), FRAME):
                deadline += FRAME / RATE
                await asyncio.sleep(max(0.0, deadline - time.monotonic()))
                await utt.push(AudioFrame(audio[i : i + FRAME], RATE))
            t0 = time.monotonic()
            await utt.finish()
            row.final_ms.append(1000 * (time.monotonic() - t0))
            row.transcribed_ratio.append(utt.samples_transcribed / len(audio))  # type: ignore[attr-defined]
        row.seconds = len(audio) / RATE
        rows.append(row)
    return rows
