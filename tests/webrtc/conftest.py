"""Fixtures for the WebRTC tests: speech fixtures, Whisper as the judge, a playground harness."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from duplex.agents.app import AppSpec, load_app
from duplex.agents.backend import Backend, ToolChoice
from duplex.agents.stages import LLM, LLMChunk, TextChunk, ToolCallChunk
from duplex.agents.wav import wav_bytes, write_wav
from duplex.backends.cascade import offline_backend
from duplex.backends.cascade.echo import EchoLLM
from tests.hearing import normalize as normalize_text
from tests.hearing import whisper_transcriber
from tests.speech import concat, silence, speak
from tests.webrtc import loopback

# Every peer in these tests (aiortc, and Chromium via cdp.FLAGS) uses loopback only.
loopback.install()

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "assistant.py"
#: Relative, as `agent dev examples/assistant.py` shows it in the page header.
EXAMPLE_ARG = os.path.relpath(EXAMPLE)


def speech_wav(path: Path, text: str, *, lead_s: float = 0.6, tail_s: float = 8.0) -> Path:
    """A 48 kHz mono WAV of ``text`` between silences: Chromium's fake microphone plays it."""
    write_wav(path, concat(silence(lead_s, 48000), speak(text, 48000), silence(tail_s, 48000)))
    return path


def silence_wav(path: Path, seconds: float) -> Path:
    """A silent microphone (Chromium's default fake device beeps, which a VAD hears)."""
    sf.write(path, np.zeros(round(48000 * seconds), np.int16), 48000, subtype="PCM_16")
    return path


def wav_b64(text: str) -> str:
    """Speech as a base64 WAV, for ``duplexTest.speak`` (the page decodes it)."""
    frame = speak(text, 48000)
    return base64.b64encode(wav_bytes(frame)).decode()


@pytest.fixture(scope="session")
def whisper() -> Iterator[Callable[[bytes], str]]:
    """Transcribes what the page recorded (PCM16 48 kHz) with the bundled Whisper tiny.en."""
    transcribe = whisper_transcriber(keep=":")

    def heard(pcm48k: bytes) -> str:
        return transcribe(np.frombuffer(pcm48k, dtype="<i2"), 48000)

    yield heard


def normalize(text: str) -> str:
    return normalize_text(text, keep=":")


def rms(pcm: bytes) -> float:
    if not pcm:
        return 0.0
    a = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    return float(np.sqrt(np.mean(a * a)))


class ToolThenEchoLLM(LLM):
    """A stand-in model for the cascade: asks for the time with a real tool call, else echoes.

    Only the model is scripted; Whisper, Piper, the session, the example's tool,
    aiortc and the browser are all real.
    """

    def __init__(self) -> None:
        self.echo = EchoLLM()

    async def stream(
        self,
        messages: Sequence[dict[str, Any]],
        *,
        tools: Sequence[dict[str, Any]] = (),
        tool_choice: ToolChoice | None = None,
    ) -> AsyncIterator[LLMChunk]:
        last = messages[-1] if messages else {}
        if last.get("role") == "tool":
            yield TextChunk(f"The time is {last.get('content')}.")
            return
        if "time" in str(last.get("content") or "").lower() and tool_choice != "none":
            yield ToolCallChunk(f"call_{uuid.uuid4().hex[:8]}", "current_time", "{}")
            return
        async for chunk in self.echo.stream(messages, tools=tools, tool_choice=tool_choice):
            yield chunk


def offline(llm: LLM | None = None) -> Backend:
    """The offline default (Whisper + Piper), optionally with a stand-in model."""
    return offline_backend(llm=llm)


@asynccontextmanager
async def playground(
    backend: Backend,
    spec: AppSpec | None = None,
    *,
    media_timeout_s: float = 5.0,
) -> AsyncIterator[Any]:
    """The real `agent dev` stack on an ephemeral port: server, app factory, default VAD."""
    from duplex.plugins.webrtc.playground import app_factory, default_vad
    from duplex.plugins.webrtc.server import PlaygroundServer

    spec = spec or load_app(EXAMPLE_ARG)
    await backend.prewarm()  # as `agent dev` does: models load before the first call, not in it
    server = PlaygroundServer(
        app_factory(spec, backend, vad=default_vad()),
        port=0,
        info={"app": spec.name, "backend": "offline"},
        transport_options={"media_timeout_s": media_timeout_s},
    )
    await server.start()
    try:
        yield server
    finally:
        await server.aclose()
        await backend.aclose()


def call_objects(transport: Any, session: Any) -> list[object]:
    """The call's own objects and aiortc's per-call ones, to look for tasks left behind."""
    pc = transport.pc
    objs: list[object] = [transport, session, pc, transport.audio_output, transport.audio_input]
    for t in pc.getTransceivers():
        objs += [t, t.sender, t.receiver, t.sender.transport, t.sender.transport.transport]
    if pc.sctp is not None:
        objs += [pc.sctp, pc.sctp.transport]
    return objs
