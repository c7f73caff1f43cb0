"""Generated caller speech for the offline section: Piper sentences, some with a hesitation.

Each sentence in `PAUSED` has a comma where a hesitant caller stops for a moment
("I would like to book a table for, two people."). Piper speaks the words before
the comma with the unfinished intonation of a phrase that goes on and leaves a
gap there; the gap is found in the audio and stretched to a realistic hesitation
(0.8-1.2 s). `COMPLETE` are whole sentences with no pause. All audio is made
once per run with Piper's noise off, so every run hears the same sentences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import soxr

RATE = 16000

PAUSED = (
    "I would like to book a table for, two people.",
    "My name is John and I, live in Paris.",
    "The weather today is, quite nice.",
    "I need to go to the, train station.",
    "I was wondering if you could, help me with my order.",
    "Tomorrow I have to, pick up the kids.",
    "Can you tell me how to, reset my password?",
    "We are planning a trip to, the mountains next week.",
    "Please send the invoice to, my office address.",
    "I think the problem is that, the battery is empty.",
    "My favourite colour is, dark blue.",
    "I would like to change my, delivery address.",
)

COMPLETE = (
    "What time is it?",
    "Please turn on the kitchen lights.",
    "I would like to order a large pizza.",
    "Can you help me with my booking?",
    "Thank you very much.",
    "What is the weather like in Paris today?",
    "Book a table for two people at seven.",
    "Tell me a joke about cats.",
)


@dataclass(frozen=True)
class Utterance:
    text: str
    audio: npt.NDArray[np.int16]  # 16 kHz mono
    #: Sample range of the hesitation, for sentences that have one.
    gap: tuple[int, int] | None = None

    def with_pause(self, seconds: float) -> npt.NDArray[np.int16]:
        if self.gap is None:
            return self.audio
        pad = np.zeros(int(seconds * RATE), np.int16)
        return np.concatenate([self.audio[: self.gap[0]], pad, self.audio[self.gap[1] :]])


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


def _to_16k(pcm: npt.NDArray[np.int16], rate: int) -> npt.NDArray[np.int16]:
    if rate == RATE:
        return pcm
    out = np.asarray(soxr.resample(pcm.astype(np.float32) / 32768.0, rate, RATE, quality="HQ"))
    clipped: npt.NDArray[np.int16] = np.clip(out * 32768.0, -32768, 32767).astype(np.int16)
    return clipped


async def synthesize(texts: tuple[str, ...], *, paused: bool) -> list[Utterance]:
    from duplex.plugins.piper import PiperTTS

    tts = PiperTTS(noise_scale=0.0, noise_w_scale=0.0)
    out = []
    for text in texts:
        frames = [f async for f in tts.synthesize(text)]
        pcm = np.concatenate([f.data[:, 0] for f in frames])
        # Trim Piper's own trailing silence so "end of speech" is the last word's end.
        loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 328)
        pcm = pcm[: int(loud[-1]) + 1] if loud.size else pcm
        audio = _to_16k(pcm, tts.sample_rate)
        out.append(Utterance(text, audio, longest_gap(audio, RATE) if paused else None))
    return out
