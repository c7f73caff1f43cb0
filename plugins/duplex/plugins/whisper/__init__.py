"""Offline speech-to-text: faster-whisper with the Whisper tiny.en model shipped in a wheel."""

from __future__ import annotations

from .model import default_model_path, load_whisper, transcribe
from .stt import WhisperSTT

__all__ = ["WhisperSTT", "default_model_path", "load_whisper", "transcribe"]
