"""WAV files in and out through libsndfile (`soundfile`): every common encoding, one error type.

16/24/32-bit PCM, 8-bit, 32/64-bit float, A-law/µ-law and WAVE_FORMAT_EXTENSIBLE all read
into an int16 `AudioFrame`; a file that is not audio, or has a rate frames cannot carry,
is an `AudioFormatError` that names the file, never a raw library error.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from .audio import AudioFrame
from .errors import AudioFormatError

__all__ = ["read_wav", "wav_bytes", "write_wav"]

WavSource = str | Path | BinaryIO


def read_wav(source: WavSource) -> AudioFrame:
    """The whole file as one frame (floats clipped to [-1, 1] first, then to int16)."""
    name = source if isinstance(source, (str, Path)) else "<stream>"
    try:
        data, rate = sf.read(source, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioFormatError(f"{name}: not a readable audio file ({e})") from None
    if data.shape[0] == 0:
        raise AudioFormatError(f"{name}: the file holds no audio")
    try:
        return AudioFrame.from_float(np.clip(data, -1.0, 1.0), int(rate), data.shape[1])
    except AudioFormatError as e:
        raise AudioFormatError(f"{name}: {e}") from None


def write_wav(target: str | Path | BinaryIO, frame: AudioFrame, *, subtype: str = "PCM_16") -> None:
    """Write ``frame`` as WAV; ``subtype`` as libsndfile names it (PCM_16, PCM_24, FLOAT...)."""
    data = frame.data if subtype == "PCM_16" else frame.data.astype(np.float32) / 32768.0
    sf.write(target, data, frame.sample_rate, subtype=subtype, format="WAV")


def wav_bytes(frame: AudioFrame, *, subtype: str = "PCM_16") -> bytes:
    """``frame`` as the bytes of a WAV file (for HTTP bodies, base64 fixtures)."""
    buf = io.BytesIO()
    write_wav(buf, frame, subtype=subtype)
    return buf.getvalue()
