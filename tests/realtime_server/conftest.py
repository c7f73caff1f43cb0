"""Fixtures: the realtime server on 127.0.0.1:0 over the offline cascade, every event checked.

Whisper and Piper load once per run; the language model is either the echo stand-in
or the scripted vLLM-shaped chat server (the echo model cannot call tools).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from duplex.agents.vad import EnergyVAD
from duplex.backends.cascade import CascadeBackend, ChatCompletionsLLM, EchoLLM
from duplex.plugins.piper import PiperTTS
from duplex.plugins.whisper import WhisperSTT
from duplex.server.realtime import RealtimeServer, ServerOptions

from ..cascade.chat_server import ChatServer
from ..openai.schema import SchemaError, validate

API_KEY = "sk-local-test"


class Checked:
    """A running server plus every schema violation it committed."""

    def __init__(self, server: RealtimeServer, chat: ChatServer | None) -> None:
        self.server = server
        self.chat = chat
        self.schema_errors: list[str] = []
        self.sent: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return self.server.url

    def hook(self, dialect: Any, event: dict[str, Any]) -> None:
        self.sent.append(event)
        try:
            validate(event, dialect=dialect, side="server")
        except SchemaError as e:
            self.schema_errors.append(str(e)[-600:])


@pytest.fixture(scope="session")
def whisper() -> WhisperSTT:
    return WhisperSTT()


@pytest.fixture(scope="session")
def piper() -> PiperTTS:
    return PiperTTS(noise_scale=0.0, noise_w_scale=0.0)  # repeatable speech


@pytest.fixture
async def chat() -> AsyncIterator[ChatServer]:
    server = await ChatServer().start()
    yield server
    await server.stop()


async def _serve(backend: CascadeBackend, chat: ChatServer | None) -> Checked:
    checked = Checked(None, chat)  # type: ignore[arg-type]
    options = ServerOptions(
        port=0, api_keys=(API_KEY, "sk-second-key"), vad=EnergyVAD(), event_hook=checked.hook
    )
    checked.server = await RealtimeServer(backend, options).start()
    return checked


@pytest.fixture
async def server(whisper: WhisperSTT, piper: PiperTTS, chat: ChatServer) -> AsyncIterator[Checked]:
    """Scripted chat model (tool calls, gates) behind Whisper and Piper."""
    llm = ChatCompletionsLLM(chat.url, chat.model)
    checked = await _serve(CascadeBackend(whisper, llm, piper), chat)
    yield checked
    await checked.server.stop()
    await llm.aclose()
    assert not checked.schema_errors, "\n".join(checked.schema_errors)


@pytest.fixture
async def echo_server(whisper: WhisperSTT, piper: PiperTTS) -> AsyncIterator[Checked]:
    """The offline default exactly: Whisper + EchoLLM + Piper."""
    checked = await _serve(CascadeBackend(whisper, EchoLLM(), piper), None)
    yield checked
    await checked.server.stop()
    assert not checked.schema_errors, "\n".join(checked.schema_errors)
