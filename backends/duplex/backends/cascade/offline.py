"""The offline default: Whisper hears, an LLM (or the echo stand-in) answers, Piper speaks."""

from __future__ import annotations

import os

from duplex.agents.stages import LLM, STT, TTS

from .backend import CascadeBackend
from .chat_completions import ChatCompletionsLLM
from .echo import EchoLLM


def llm_from_env() -> LLM:
    """``DUPLEX_LLM_URL`` + ``DUPLEX_LLM_MODEL`` (+ optional ``DUPLEX_LLM_API_KEY``), else echo."""
    url = os.environ.get("DUPLEX_LLM_URL")
    model = os.environ.get("DUPLEX_LLM_MODEL")
    if url and model:
        return ChatCompletionsLLM(url, model, api_key=os.environ.get("DUPLEX_LLM_API_KEY") or None)
    return EchoLLM()


def offline_backend(
    *, llm: LLM | None = None, stt: STT | None = None, tts: TTS | None = None
) -> CascadeBackend:
    """Runs with no network: models ship in wheels (Whisper tiny.en, Piper en_US-joe-medium).

    Without ``DUPLEX_LLM_URL``/``DUPLEX_LLM_MODEL`` the reply is `EchoLLM`'s
    "You said: ...", which proves the audio path end to end but is not a model.
    Any stage can be swapped (e.g. a repeatable Piper voice in tests).
    """
    from duplex.plugins.piper import PiperTTS
    from duplex.plugins.whisper import WhisperSTT

    return CascadeBackend(stt or WhisperSTT(), llm or llm_from_env(), tts or PiperTTS())
