"""Typed failures of the cascade's stages, so a caller can tell which model broke."""

from __future__ import annotations

from duplex.agents.errors import BackendErrorException


class StageError(BackendErrorException):
    """A stage (speech-to-text, language model, text-to-speech) failed."""

    stage = "stage"


class STTError(StageError):
    stage = "stt"


class STTOverflowError(STTError):
    """An utterance outgrew the audio a speech-to-text stage keeps; the frame was refused.

    Audio already accepted stays in the utterance, so its transcript is not lost.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, code="stt_buffer_full", recoverable=True)


class LLMError(StageError):
    stage = "llm"


class TTSError(StageError):
    stage = "tts"
