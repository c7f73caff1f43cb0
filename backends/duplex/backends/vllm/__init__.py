"""A local vLLM as a voice backend: realtime speech-to-text, chat completions, speech.

vLLM's ``/v1/realtime`` only transcribes, so the reply comes from
``/v1/chat/completions`` (tools included) and speech from a ``/v1/audio/speech``
server (vLLM-Omni) or, when none is given, the local Piper voice. See
docs/backends/vllm.md for the ``vllm serve`` commands.
"""

from __future__ import annotations

import os
from typing import Any

from duplex.agents.errors import ConfigurationError
from duplex.agents.stages import TTS
from duplex.backends.cascade import CascadeBackend, ChatCompletionsLLM, SpeechEndpointTTS

from .realtime_stt import VLLMRealtimeSTT, VLLMRealtimeSTTSession

__all__ = ["VLLMRealtime", "VLLMRealtimeSTT", "VLLMRealtimeSTTSession"]

DEFAULT_STT_MODEL = "mistralai/Voxtral-Mini-4B-Realtime-2602"


class VLLMRealtime(CascadeBackend):
    """The vLLM stages against one base URL (``stt_url``/``llm_url``/``tts_url`` split them).

    Unset arguments come from the environment: ``DUPLEX_VLLM_URL`` (default
    ``http://localhost:8000``), ``DUPLEX_STT_MODEL``, ``DUPLEX_LLM_MODEL`` (required),
    ``DUPLEX_TTS_URL`` / ``DUPLEX_TTS_MODEL`` / ``DUPLEX_TTS_VOICE``, ``DUPLEX_LLM_API_KEY``.
    ``tts`` may be any `TTS`; without one and without a TTS URL the local Piper voice speaks.
    ``llm_extra_body`` is merged into each chat request, e.g.
    ``{"chat_template_kwargs": {"enable_thinking": False}}`` for Qwen3.
    The ``stt_*`` settings go to `VLLMRealtimeSTT` (``stt_reconnect_window_s``: the
    longest vLLM restart a caller's turn survives).
    """

    def __init__(
        self,
        base_url: str | None = None,
        stt_model: str | None = None,
        llm_model: str | None = None,
        *,
        tts: TTS | None = None,
        stt_url: str | None = None,
        llm_url: str | None = None,
        tts_url: str | None = None,
        tts_model: str | None = None,
        tts_voice: str | None = None,
        tts_transport: str = "http",
        tts_sample_rate: int = 24000,
        api_key: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        llm_extra_body: dict[str, Any] | None = None,
        sentence_min_chars: int = 4,
        preemptive_generation: bool = False,
        stt_reconnect_window_s: float = 30.0,
        stt_final_timeout: float = 30.0,
        stt_max_utterance_s: float = 60.0,
        stt_heartbeat_s: float | None = 20.0,
        stt_session_extra: dict[str, Any] | None = None,
    ) -> None:
        env = os.environ.get
        base = base_url or env("DUPLEX_VLLM_URL") or "http://localhost:8000"
        llm_model = llm_model or env("DUPLEX_LLM_MODEL")
        if not llm_model:
            raise ConfigurationError(
                "VLLMRealtime needs llm_model (or DUPLEX_LLM_MODEL): the chat model vLLM serves"
            )
        api_key = api_key or env("DUPLEX_LLM_API_KEY")
        stt = VLLMRealtimeSTT(
            stt_url or base,
            stt_model or env("DUPLEX_STT_MODEL") or DEFAULT_STT_MODEL,
            api_key=api_key,
            reconnect_window_s=stt_reconnect_window_s,
            final_timeout=stt_final_timeout,
            max_utterance_s=stt_max_utterance_s,
            heartbeat_s=stt_heartbeat_s,
            session_extra=stt_session_extra,
        )
        llm = ChatCompletionsLLM(
            llm_url or base,
            llm_model,
            api_key=api_key,
            temperature=temperature,
            max_tokens=max_tokens,
            extra_body=llm_extra_body,
        )
        tts_url = tts_url or env("DUPLEX_TTS_URL")
        if tts is None and tts_url:
            if tts_transport not in ("http", "websocket"):
                raise ConfigurationError(
                    f"tts_transport must be http or websocket, not {tts_transport!r}"
                )
            tts = SpeechEndpointTTS(
                tts_url,
                tts_model or env("DUPLEX_TTS_MODEL"),
                voice=tts_voice or env("DUPLEX_TTS_VOICE"),
                transport="websocket" if tts_transport == "websocket" else "http",
                sample_rate=tts_sample_rate,
                api_key=api_key,
            )
        if tts is None:
            from duplex.plugins.piper import PiperTTS  # local voice: only when asked for

            tts = PiperTTS()
        # Off by default here: a server STT's partials lag the audio, so a speculation
        # started at a pause often runs on stale words and costs a wasted LLM call.
        super().__init__(
            stt,
            llm,
            tts,
            sentence_min_chars=sentence_min_chars,
            preemptive_generation=preemptive_generation,
        )
