"""G.711 μ-law and A-law, the codecs of the telephone network.

Uses the C implementation of ``audioop`` (stdlib up to 3.12, the ``audioop-lts``
backport from 3.13) rather than a hand-written table.
"""

from __future__ import annotations

import warnings
from typing import Literal

from .audio import AudioFrame
from .errors import AudioFormatError

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

G711Law = Literal["ulaw", "alaw"]


def encode(frame: AudioFrame, law: G711Law = "ulaw") -> bytes:
    """One byte per sample; the frame must already be mono (G.711 has one channel)."""
    if frame.channels != 1:
        raise AudioFormatError("G.711 is mono; mix down first")
    pcm = frame.to_pcm16()
    if law == "ulaw":
        return audioop.lin2ulaw(pcm, 2)
    if law == "alaw":
        return audioop.lin2alaw(pcm, 2)
    raise AudioFormatError(f"unknown G.711 law {law!r}")


def decode(payload: bytes, law: G711Law = "ulaw", sample_rate: int = 8000) -> AudioFrame:
    if not payload:
        raise AudioFormatError("empty G.711 payload")
    if law == "ulaw":
        pcm = audioop.ulaw2lin(bytes(payload), 2)
    elif law == "alaw":
        pcm = audioop.alaw2lin(bytes(payload), 2)
    else:
        raise AudioFormatError(f"unknown G.711 law {law!r}")
    return AudioFrame.from_pcm16(pcm, sample_rate, 1)
