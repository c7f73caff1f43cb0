"""Which cascade serves: the offline default or a vLLM stack, from flags or the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

from duplex.agents.app import choose_backend
from duplex.agents.errors import ConfigurationError
from duplex.backends.cascade import CascadeBackend

#: Flag -> the environment variable the backends read (so flags and env mean the same).
FLAG_ENV = {
    "vllm_url": "DUPLEX_VLLM_URL",
    "stt_model": "DUPLEX_STT_MODEL",
    "llm_url": "DUPLEX_LLM_URL",
    "llm_model": "DUPLEX_LLM_MODEL",
    "tts_url": "DUPLEX_TTS_URL",
    "tts_model": "DUPLEX_TTS_MODEL",
    "tts_voice": "DUPLEX_TTS_VOICE",
}


def default_cascade_name(environ: Mapping[str, str]) -> str:
    """``vllm`` when ``DUPLEX_VLLM_URL`` is set, else ``offline`` (Whisper + LLM/echo + Piper)."""
    return "vllm" if environ.get("DUPLEX_VLLM_URL") else "offline"


def cascade_backend(
    name: str | None = None,
    *,
    settings: Mapping[str, str | None] | None = None,
    environ: MutableMapping[str, str] | None = None,
) -> CascadeBackend:
    """The backend for ``--backend`` (offline/vllm or any cascade registered as a backend).

    ``settings`` are the flags of `FLAG_ENV`; a given one overrides its variable.
    """
    env = os.environ if environ is None else environ
    for key, value in (settings or {}).items():
        if value:
            env[FLAG_ENV[key]] = value
    name = name or default_cascade_name(env)
    if name == "vllm":
        # Built here rather than by the entry point: the chat model may have its own URL.
        from duplex.backends.vllm import VLLMRealtime

        return VLLMRealtime(
            env.get("DUPLEX_VLLM_URL"),
            env.get("DUPLEX_STT_MODEL"),
            env.get("DUPLEX_LLM_MODEL"),
            llm_url=env.get("DUPLEX_LLM_URL"),
            tts_url=env.get("DUPLEX_TTS_URL"),
            tts_model=env.get("DUPLEX_TTS_MODEL"),
            tts_voice=env.get("DUPLEX_TTS_VOICE"),
            api_key=env.get("DUPLEX_LLM_API_KEY"),
        )
    if name == "offline" and env.get("DUPLEX_LLM_URL") and env.get("DUPLEX_LLM_MODEL"):
        from duplex.backends.cascade import ChatCompletionsLLM, offline_backend

        llm = ChatCompletionsLLM(
            env["DUPLEX_LLM_URL"], env["DUPLEX_LLM_MODEL"], api_key=env.get("DUPLEX_LLM_API_KEY")
        )
        return offline_backend(llm=llm)
    backend = choose_backend(name, environ=env)
    if not isinstance(backend, CascadeBackend):
        raise ConfigurationError(
            f"backend {name!r} is not a cascade (speech-to-text + LLM + speech); "
            "the realtime server serves 'offline', 'vllm' or another CascadeBackend"
        )
    return backend
