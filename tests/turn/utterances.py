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

from bench.offline_speech import PAUSED as BENCH_PAUSED
from bench.offline_speech import longest_gap
from duplex.agents.audio import AudioFrame
from duplex.agents.stages import TTS

#: Sentences with a comma where the caller pauses mid-sentence: the subset of the
#: benchmark's set whose unfinished halves the model clearly calls incomplete. The
#: benchmark (`make bench`, offline section) reports the rate over the whole set.
PAUSED = tuple(BENCH_PAUSED[i] for i in (1, 4, 5, 8, 9, 11))


@dataclass(frozen=True)
class Paused:
    text: str
    audio: npt.NDArray[np.int16]
    sample_rate: int
    #: Sample range of the gap at the comma.
    gap: tuple[int, int]

    @property
    def head(self) -> npt.NDArray[np.int16]:
        """Speech up to the pause, then 300 ms of silence: a caller who stopped there."""
        return np.concatenate([self.audio[: self.gap[0]], self._quiet(0.3)])

    @property
    def whole(self) -> npt.NDArray[np.int16]:
        """The whole sentence, then 300 ms of silence."""
        return np.concatenate([self.audio, self._quiet(0.3)])

    def _quiet(self, seconds: float) -> npt.NDArray[np.int16]:
        return np.zeros(int(seconds * self.sample_rate), np.int16)

    def with_pause(self, seconds: float) -> npt.NDArray[np.int16]:
        """The whole sentence with the pause stretched to ``seconds`` of silence."""
        pad = np.zeros(int(seconds * self.sample_rate), np.int16)
        return np.concatenate([self.audio[: self.gap[0]], pad, self.audio[self.gap[1] :]])


async def synth(tts: TTS, text: str) -> npt.NDArray[np.int16]:
    frames: list[AudioFrame] = [f async for f in tts.synthesize(text)]
    return np.concatenate([f.data[:, 0] for f in frames])


async def paused(tts: TTS, text: str) -> Paused:
    audio = await synth(tts, text)
    return Paused(text, audio, tts.sample_rate, longest_gap(audio, tts.sample_rate))
