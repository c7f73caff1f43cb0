"""Test audio: real synthetic speech (espeak-ng), silence and seeded noise.

Usage from any test module (``tests`` is a package, so this imports by name)::

    from tests.speech import speak, silence, white_noise, pink_noise, concat

``speak()`` runs the ``espeak-ng`` binary (Debian package ``espeak-ng``) once per
(text, voice, speed) for the whole test session; the WAV files live in a temp
directory removed at exit. The speech is trimmed to its first and last audible
sample, so a test that pads it with known silence knows exactly where speech is.
Everything is deterministic: espeak-ng is, and the noise generators take a seed.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from duplex.agents.audio import AudioFrame
from duplex.agents.resample import Resampler
from duplex.agents.wav import read_wav

ESPEAK = "espeak-ng"
#: Amplitude (of 32768) below which espeak-ng's output counts as its own silence.
TRIM_LEVEL = 100

_cache_dir: Path | None = None


def _dir() -> Path:
    global _cache_dir
    if _cache_dir is None:
        _cache_dir = Path(tempfile.mkdtemp(prefix="duplex-speech-"))
        atexit.register(shutil.rmtree, _cache_dir, True)
    return _cache_dir


def espeak_available() -> bool:
    return shutil.which(ESPEAK) is not None


@functools.lru_cache(maxsize=64)
def _espeak_pcm(text: str, voice: str, speed: int) -> tuple[bytes, int]:
    """Raw PCM16 mono at espeak-ng's native rate (22050 Hz), trimmed of edge silence."""
    key = hashlib.sha1(f"{voice}|{speed}|{text}".encode()).hexdigest()[:16]
    path = _dir() / f"{key}.wav"
    if not path.exists():
        subprocess.run(
            [ESPEAK, "-v", voice, "-s", str(speed), "-w", str(path), text],
            check=True,
            capture_output=True,
            timeout=30,
        )
    frame = read_wav(path)
    assert frame.channels == 1
    rate, pcm = frame.sample_rate, frame.data[:, 0]
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > TRIM_LEVEL)
    assert loud.size, f"espeak-ng produced no audible speech for {text!r}"
    return pcm[loud[0] : loud[-1] + 1].astype(np.int16).tobytes(), rate


def speak(
    text: str,
    sample_rate: int = 16000,
    *,
    voice: str = "en-us",
    speed: int = 175,
    gain: float = 1.0,
) -> AudioFrame:
    """Speech for ``text``, mono at ``sample_rate``, starting and ending on speech."""
    pcm, native = _espeak_pcm(text, voice, speed)
    frame = AudioFrame.from_pcm16(pcm, native, 1)
    if gain != 1.0:
        frame = AudioFrame.from_float(np.clip(frame.to_float() * gain, -1.0, 1.0), native)
    if sample_rate == native:
        return frame
    rs = Resampler(native, sample_rate)
    parts = [f for f in (rs.push(frame), rs.flush()) if f is not None]
    return AudioFrame.concat(parts)


def silence(seconds: float, sample_rate: int = 16000, channels: int = 1) -> AudioFrame:
    return AudioFrame.silence(seconds, sample_rate, channels)


def white_noise(
    seconds: float, sample_rate: int = 16000, *, rms: float = 0.05, seed: int = 0
) -> AudioFrame:
    """Gaussian white noise at an RMS level in [0, 1] of full scale."""
    rng = np.random.default_rng(seed)
    n = round(seconds * sample_rate)
    x = rng.standard_normal(n).astype(np.float32) * np.float32(rms)
    return AudioFrame.from_float(np.clip(x, -1.0, 1.0), sample_rate)


def pink_noise(
    seconds: float, sample_rate: int = 16000, *, rms: float = 0.05, seed: int = 0
) -> AudioFrame:
    """1/f noise (power falls 3 dB per octave), shaped in the frequency domain."""
    rng = np.random.default_rng(seed)
    n = round(seconds * sample_rate)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    freqs[0] = freqs[1]
    x = np.fft.irfft(spectrum / np.sqrt(freqs), n)
    x *= rms / float(np.sqrt(np.mean(x * x)))
    return AudioFrame.from_float(np.clip(x, -1.0, 1.0).astype(np.float32), sample_rate)


def sine(
    freq: float, seconds: float, sample_rate: int = 16000, *, amplitude: float = 0.5
) -> AudioFrame:
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return AudioFrame.from_float(
        (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32), sample_rate
    )


def concat(*frames: AudioFrame) -> AudioFrame:
    return AudioFrame.concat(list(frames))


def split(frame: AudioFrame, ms: float) -> list[AudioFrame]:
    """Cut into frames of ``ms`` (the last may be shorter), as a transport delivers them."""
    step = max(1, round(frame.sample_rate * ms / 1000))
    return [frame.slice(i, i + step) for i in range(0, len(frame), step)]
