"""A backend made of three stages: speech-to-text -> language model -> text-to-speech.

`CascadeBackend(stt, llm, tts)` turns any such trio into a duplex backend;
`offline_backend()` is the one that needs no network (Whisper + LLM/echo + Piper).
"""

from __future__ import annotations

from duplex.agents.stages import (
    LLM,
    STT,
    TTS,
    LLMChunk,
    STTSession,
    STTUtterance,
    TextChunk,
    ToolCallChunk,
    UsageChunk,
)

from .backend import CascadeBackend
from .chat_completions import ChatCompletionsLLM
from .echo import EchoLLM
from .errors import LLMError, StageError, STTError, STTOverflowError, TTSError
from .offline import llm_from_env, offline_backend
from .session import CascadeSession
from .speech_endpoint import SpeechEndpointTTS

__all__ = [
    "LLM",
    "STT",
    "TTS",
    "CascadeBackend",
    "CascadeSession",
    "ChatCompletionsLLM",
    "EchoLLM",
    "LLMChunk",
    "LLMError",
    "STTError",
    "STTOverflowError",
    "STTSession",
    "STTUtterance",
    "SpeechEndpointTTS",
    "StageError",
    "TTSError",
    "TextChunk",
    "ToolCallChunk",
    "UsageChunk",
    "llm_from_env",
    "offline_backend",
]
