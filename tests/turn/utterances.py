"""Generated test speech for turn-taking: Piper sentences, whole or cut at a mid-sentence pause.

A sentence is written with a comma where a hesitant caller would pause
("I would like to book a table for, two people."); Piper then speaks the part
before the comma with the rising, unfinished intonation of a phrase that goes
on, and leaves a gap there. Cutting the audio at that gap gives a realistic
"caller stopped mid-sentence" clip; inserting longer silence there gives a
hesitation. Deterministic: Piper runs with its noise turned off.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from duplex.agents.audio import AudioFrame
from duplex.agents.stages import TTS

#: Sentences with a comma where the caller pauses mid-sentence.
PAUSED = (
    "I would like to book a table for, two people.",
    "My name is John and I, live in Paris.",
    "The weather today is, quite nice.",
    "I need to go to the, train station.",
    "I was wondering if you could, help me with my order.",
    "Tomorrow I have to, pick up the kids.",
)


@dataclass(frozen=True)
class Paused:
    text: str
    audio: npt.NDArray[np.int16]
    sample_rate: int
    #: Sample range of the gap at the comma.
    gap: tuple[int, int]

    @property
    def head(self) -> npt.NDArray[np.int16]:
        """Speech up to the pause: the sentence as a caller who stopped there said it."""
        return self.audio[: self.gap[0]]

    def with_pause(self, seconds: float) -> npt.NDArray[np.int16]:
        """The whole sentence with the pause stretched to ``seconds`` of silence."""
        pad = np.zeros(int(seconds * self.sample_rate), np.int16)
        return np.concatenate([self.audio[: self.gap[0]], pad, self.audio[self.gap[1] :]])


async def synth(tts: TTS, text: str) -> npt.NDArray[np.int16]:
    frames: list[AudioFrame] = [f async for f in tts.synthesize(text)]
    return np.concatenate([f.data[:, 0] for f in frames])


def longest_gap(audio: npt.NDArray[np.int16], sample_rate: int) -> tuple[int, int]:
    """The longest inner run of 10 ms windows 30 dB below the loudest one."""
    w = sample_rate // 100
    n = len(audio) // w
    rms = np.sqrt((audio[: n * w].astype(np.float64).reshape(n, w) ** 2).mean(axis=1))
    quiet = rms < rms.max() * 0.03
    best = (0, 0)
    i = 0
    while i < n:
        if not quiet[i]:
            i += 1
            continue
        j = i
        while j < n and quiet[j]:
            j += 1
        if i > 0 and j < n and j - i > best[1] - best[0]:
            best = (i, j)
        i = j
    return best[0] * w, best[1] * w


async def paused(tts: TTS, text: str) -> Paused:
    audio = await synth(tts, text)
    return Paused(text, audio, tts.sample_rate, longest_gap(audio, tts.sample_rate))
