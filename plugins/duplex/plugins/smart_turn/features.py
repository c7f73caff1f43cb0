"""Whisper-style log-mel features for Smart Turn, in numpy (no torch, no transformers).

The model is a Whisper-Tiny encoder, so its input is what Whisper's feature
extractor makes from the last 8 s of 16 kHz audio: 80 log-mel bands x 800 frames.
Steps (the same as Hugging Face's ``WhisperFeatureExtractor(chunk_length=8)`` after
zero-mean/unit-variance normalisation): centred STFT with reflect padding, a
periodic Hann window of 400 samples, hop 160, power spectrum, Slaney mel filters
(0-8 kHz, area-normalised), log10 with a 1e-10 floor, last frame dropped, dynamic
range clamped to 8 (80 dB), then scaled to about [-1, 1].
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
N_MELS = 80
#: The model sees the last 8 s of the turn.
WINDOW_SAMPLES = 8 * SAMPLE_RATE
N_FRAMES = WINDOW_SAMPLES // HOP  # 800


def _hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    f_sp = 200.0 / 3.0
    mel = hz / f_sp
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    above = hz >= min_log_hz
    mel[above] = min_log_mel + np.log(hz[above] / min_log_hz) / logstep
    return mel


def _mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    f_sp = 200.0 / 3.0
    hz = mel * f_sp
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    above = mel >= min_log_mel
    hz[above] = min_log_hz * np.exp(logstep * (mel[above] - min_log_mel))
    return hz


@lru_cache(maxsize=1)
def mel_filters() -> npt.NDArray[np.float64]:
    """[n_fft/2+1, 80] triangular filters, each scaled to unit area (Slaney norm)."""
    fft_hz = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges_mel = np.linspace(
        _hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([SAMPLE_RATE / 2]))[0], N_MELS + 2
    )
    edges = _mel_to_hz(edges_mel)
    width = np.diff(edges)
    offset = edges[None, :] - fft_hz[:, None]
    rising = -offset[:, :-2] / width[:-1]
    falling = offset[:, 2:] / width[1:]
    bank = np.maximum(0.0, np.minimum(rising, falling))
    bank *= 2.0 / (edges[2 : N_MELS + 2] - edges[:N_MELS])
    bank.flags.writeable = False
    return bank


@lru_cache(maxsize=1)
def _window() -> npt.NDArray[np.float64]:
    n = np.arange(N_FFT)
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / N_FFT)  # periodic Hann
    w.flags.writeable = False
    return w


def last_window(audio: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """The last 8 s of 16 kHz float audio, zero-padded at the front when shorter."""
    x = np.asarray(audio, dtype=np.float32).reshape(-1)[-WINDOW_SAMPLES:]
    if len(x) < WINDOW_SAMPLES:
        x = np.concatenate([np.zeros(WINDOW_SAMPLES - len(x), np.float32), x])
    return x


def normalize(audio: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """Zero mean, unit variance (epsilon 1e-7), as the model was trained."""
    x = np.asarray(audio, dtype=np.float32)
    out: npt.NDArray[np.float32] = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    return out


def log_mel(audio: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """[80, n/160] log-mel features of already normalised 16 kHz audio."""
    x = np.asarray(audio, dtype=np.float64)
    padded = np.pad(x, N_FFT // 2, mode="reflect")
    n_frames = 1 + (len(padded) - N_FFT) // HOP
    frames = np.lib.stride_tricks.as_strided(
        padded,
        shape=(n_frames, N_FFT),
        strides=(padded.strides[0] * HOP, padded.strides[0]),
        writeable=False,
    )
    spec = np.abs(np.fft.rfft(frames * _window(), axis=1)) ** 2  # [frames, 201]
    mel = spec @ mel_filters()  # [frames, 80]
    log = np.log10(np.maximum(mel, 1e-10)).T[:, :-1]
    log = np.maximum(log, log.max() - 8.0)
    out: npt.NDArray[np.float32] = ((log + 4.0) / 4.0).astype(np.float32)
    return out


def features(audio: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """Model input [1, 80, 800] from 16 kHz float audio in [-1, 1] of any length."""
    return log_mel(normalize(last_window(audio)))[None, :, :]
