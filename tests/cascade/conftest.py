"""Fixtures for the cascade tests: real servers on 127.0.0.1:0, models loaded once per run."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from duplex.plugins.piper import PiperTTS
from duplex.plugins.whisper import WhisperSTT

from .chat_server import ChatServer
from .speech_server import SpeechServer
from .vllm_server import Transcriber, VLLMRealtimeServer, whisper_transcriber


@pytest.fixture(scope="session")
def transcriber() -> Transcriber:
    return whisper_transcriber()


@pytest.fixture(scope="session")
def piper() -> PiperTTS:
    return PiperTTS(noise_scale=0.0, noise_w_scale=0.0)  # repeatable speech


@pytest.fixture(scope="session")
def whisper_stt(transcriber: Transcriber) -> WhisperSTT:
    return WhisperSTT()  # shares the model the transcriber loaded


@pytest.fixture
async def vllm_server(transcriber: Transcriber) -> AsyncIterator[VLLMRealtimeServer]:
    server = await VLLMRealtimeServer(transcriber).start()
    yield server
    await server.stop()


@pytest.fixture
async def chat_server() -> AsyncIterator[ChatServer]:
    server = await ChatServer().start()
    yield server
    await server.stop()


@pytest.fixture
async def speech_server() -> AsyncIterator[SpeechServer]:
    server = await SpeechServer().start()
    yield server
    await server.stop()
