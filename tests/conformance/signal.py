"""Audio that tells on itself: reply audio names its item and its own sample offset.

Every sample of a scripted reply is ``tag * 256 + block - 32768`` where ``tag``
(1..255, never 128) identifies the reply and ``block`` is the sample's 20 ms block
index (mod 256). Zero never occurs (tag 128 is skipped), so the zero padding a
playout adds at an item's end is told apart from reply audio. From the frames the
transport played we then know, per item, exactly how many samples the caller heard
and that they were the item's first samples in order (no gap, no repeat).

Caller audio is a tone per utterance (its frequency names the words the test
transcriber hears) or seeded noise (no words at all).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from duplex.agents.audio import AudioFrame
from duplex.agents.testing import PlayedFrame

RATE = 24000
BLOCK_MS = 20


def block_samples(rate: int = RATE) -> int:
    return rate * BLOCK_MS // 1000


def tag_for(n: int) -> int:
    """The n-th reply's tag (n >= 0), cycling through 1..255 without 128."""
    tags = [t for t in range(1, 256) if t != 128]
    return tags[n % len(tags)]


def tagged_samples(tag: int, start: int, count: int, rate: int = RATE) -> npt.NDArray[np.int16]:
    """Samples ``start .. start+count`` of reply ``tag``."""
    if not 1 <= tag <= 255 or tag == 128:
        raise ValueError(f"bad tag {tag}")
    idx = np.arange(start, start + count)
    block = (idx // block_samples(rate)) % 256
    return (tag * 256 + block - 32768).astype(np.int16)


def tagged(tag: int, ms: float, rate: int = RATE, *, start_ms: float = 0.0) -> AudioFrame:
    start = round(rate * start_ms / 1000)
    count = round(rate * ms / 1000)
    return AudioFrame(tagged_samples(tag, start, count, rate).reshape(-1, 1), rate)


@dataclass
class Heard:
    """What the caller heard of one tagged reply."""

    samples: int = 0
    #: False when the heard samples are not exactly the reply's first ones, in order.
    in_order: bool = True

    def ms(self, rate: int = RATE) -> float:
        return 1000.0 * self.samples / rate


def heard(played: Sequence[PlayedFrame], rate: int = RATE) -> tuple[dict[int, Heard], int]:
    """Per tag, what was played; and how many non-zero samples carried no valid tag."""
    if not played:
        return {}, 0
    data = np.concatenate([p.frame.data[:, 0] for p in played]).astype(np.int32)
    rates = {p.frame.sample_rate for p in played}
    channels = {p.frame.channels for p in played}
    if rates != {rate} or channels != {1}:
        raise AssertionError(f"played frames are {rates} Hz / {channels} ch, expected {rate} mono")
    data = data[data != 0]
    code = data + 32768
    tags = code // 256
    blocks = code % 256
    foreign = int(np.count_nonzero((tags == 0) | (tags == 128)))
    out: dict[int, Heard] = {}
    bs = block_samples(rate)
    for tag in np.unique(tags):
        if tag in (0, 128):
            continue
        mine = blocks[tags == tag]
        expect = (np.arange(mine.size) // bs) % 256
        out[int(tag)] = Heard(int(mine.size), bool(np.array_equal(mine, expect)))
    return out, foreign


# --- caller audio ---------------------------------------------------------------------------
#: Tone frequencies of caller utterances; the test transcriber maps them back to words.
UTTERANCE_HZ = [300.0 + 40.0 * k for k in range(40)]


def utterance_words(k: int) -> str:
    return f"question number {k}"


def caller_tone(k: int, ms: float, rate: int, level: float = 0.3) -> AudioFrame:
    t = np.arange(round(rate * ms / 1000)) / rate
    hz = UTTERANCE_HZ[k % len(UTTERANCE_HZ)]
    return AudioFrame.from_float(level * np.sin(2 * np.pi * hz * t), rate)


def noise(ms: float, rate: int, seed: int, level: float = 0.3) -> AudioFrame:
    rng = np.random.default_rng(seed)
    return AudioFrame.from_float(level * rng.uniform(-1, 1, round(rate * ms / 1000)), rate)


def dominant_hz(samples: npt.NDArray[np.floating] | npt.NDArray[np.integer], rate: int) -> float:
    x = np.asarray(samples, dtype=np.float64)
    if x.size < 64:
        return 0.0
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1.0 / rate)[int(np.argmax(spec))])


def transcribe_tone(samples: npt.NDArray[np.int16], rate: int = 16000) -> str:
    """What the test STT 'hears': the words of the utterance tone, or nothing for noise."""
    x = samples.astype(np.float64) / 32768.0
    loud = np.abs(x) > 0.05
    if loud.sum() < rate * 0.08:
        return ""
    x = x[np.flatnonzero(loud)[0] : np.flatnonzero(loud)[-1] + 1]
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    peak = float(spec.max())
    # A tone puts most energy in one narrow peak; noise spreads it flat.
    if peak < 20.0 * float(np.median(spec)):
        return ""
    hz = float(np.fft.rfftfreq(x.size, 1.0 / rate)[int(np.argmax(spec))])
    k = int(np.argmin([abs(hz - f) for f in UTTERANCE_HZ]))
    if abs(UTTERANCE_HZ[k] - hz) > 15.0:
        return ""
    return utterance_words(k)


def tag_of_sample(value: int) -> int:
    """The tag a reply sample carries (0 when it carries none)."""
    tag = (value + 32768) // 256
    return 0 if value == 0 or tag == 128 else tag
