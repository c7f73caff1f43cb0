"""`--backend` / flags pick the cascade: offline by default, vLLM stages by URL."""

from __future__ import annotations

import pytest

from duplex.agents.errors import ConfigurationError
from duplex.backends.cascade import ChatCompletionsLLM, EchoLLM
from duplex.backends.vllm import VLLMRealtime
from duplex.server.realtime import cascade_backend


def test_offline_default_and_chat_url() -> None:
    env: dict[str, str] = {}
    assert isinstance(cascade_backend(environ=env).llm, EchoLLM)
    settings = {"llm_url": "http://127.0.0.1:9/v1", "llm_model": "m"}
    backend = cascade_backend(settings=settings, environ=env)
    assert isinstance(backend.llm, ChatCompletionsLLM)


def test_vllm_stages_from_flags() -> None:
    env: dict[str, str] = {}
    settings = {
        "vllm_url": "http://127.0.0.1:8001",
        "llm_url": "http://127.0.0.1:8002/v1",
        "llm_model": "Qwen/Qwen3-8B",
        "tts_url": "http://127.0.0.1:8091",
    }
    backend = cascade_backend(settings=settings, environ=env)
    assert isinstance(backend, VLLMRealtime)
    assert env["DUPLEX_VLLM_URL"] == "http://127.0.0.1:8001"
    assert type(backend.tts).__name__ == "SpeechEndpointTTS"


def test_a_backend_that_is_not_a_cascade_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="not a cascade"):
        cascade_backend("scripted", environ={})
