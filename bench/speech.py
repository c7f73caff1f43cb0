"""The callers' speech: espeak-ng utterances made once into bench/.cache/ (git-ignored).

Each utterance is trimmed to its first and last audible sample and scaled to the
same peak, so the script knows exactly where speech starts and ends.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import config as C

CACHE = Path(__file__).resolve().parent / ".cache"

#: What a caller asks (a turn that gets a full reply).
QUESTIONS = (
    "what is the weather like in paris today",
    "can you book a table for two at eight",
    "please read me my last three messages",
)
#: What a caller says over the agent (a barge-in, then its own turn).
BARGE_INS = (
    "wait, stop, tell me about london instead",
    "no no, make it four people",
    "actually, skip that one",
)
TRIM_LEVEL = 100
PEAK = 0.5 * 32767


@dataclass(frozen=True)
class Utterance:
    text: str
    #: Mono int16 at the input rate; sample 0 is the onset, the last sample the end.
    pcm: np.ndarray
    #: Index of the last sample louder than `config.SPEECH_LEVEL` (what the server sees last).
    last_speech: int

    @property
    def duration_ms(self) -> float:
        return 1000.0 * self.pcm.size / C.INPUT_RATE


@dataclass(frozen=True)
class SpeechBank:
    questions: tuple[Utterance, ...]
    barge_ins: tuple[Utterance, ...]


def _espeak(text: str, path: Path) -> None:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError(
            "espeak-ng is needed to make the benchmark's speech (apt install espeak-ng)"
        )
    subprocess.run(
        [exe, "-v", "en-us", "-s", "175", "-w", str(path), text],
        check=True,
        capture_output=True,
        timeout=60,
    )


def _make(text: str) -> np.ndarray:
    key = hashlib.sha1(f"v1|{text}".encode()).hexdigest()[:16]
    npy = CACHE / f"{key}.npy"
    if npy.exists():
        return np.asarray(np.load(npy), dtype=np.int16)
    # Only when making them: a process that loads the cached fixtures (the memory probe's
    # harness baseline) must not import duplex or soxr.
    import soxr

    from duplex.agents.wav import read_wav

    CACHE.mkdir(parents=True, exist_ok=True)
    wav = CACHE / f"{key}.wav"
    _espeak(text, wav)
    frame = read_wav(wav)
    rate, raw = frame.sample_rate, frame.data[:, 0].astype(np.float32)
    wav.unlink()
    loud = np.flatnonzero(np.abs(raw) > TRIM_LEVEL)
    raw = raw[loud[0] : loud[-1] + 1]
    up = np.asarray(soxr.resample(raw, rate, C.INPUT_RATE, quality="HQ"), dtype=np.float32)
    up *= PEAK / max(1.0, float(np.max(np.abs(up))))
    loud = np.flatnonzero(np.abs(up) > TRIM_LEVEL)
    pcm: np.ndarray = np.clip(np.rint(up[loud[0] : loud[-1] + 1]), -32768, 32767).astype(np.int16)
    np.save(npy, pcm)
    return pcm


def _utterance(text: str) -> Utterance:
    pcm = _make(text)
    last = int(np.flatnonzero(np.abs(pcm.astype(np.int32)) > C.SPEECH_LEVEL)[-1])
    return Utterance(text, pcm, last)


def load() -> SpeechBank:
    """Make (first time) or load the utterances."""
    return SpeechBank(
        tuple(_utterance(t) for t in QUESTIONS), tuple(_utterance(t) for t in BARGE_INS)
    )


def noise_floor(seconds: float = 10.0, seed: int = 7) -> np.ndarray:
    """A loop of microphone noise far below `config.SPEECH_LEVEL`."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, C.NOISE_STD, int(seconds * C.INPUT_RATE))
    return np.clip(np.rint(noise), -C.SPEECH_LEVEL // 2, C.SPEECH_LEVEL // 2).astype(np.int16)
