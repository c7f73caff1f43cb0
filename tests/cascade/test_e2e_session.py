"""End to end: spoken question -> MemoryTransport -> AgentSession -> CascadeBackend -> audio out.

Real Whisper hears the caller, a scripted vLLM-shaped chat server answers (with a
tool call), real Piper speaks, and Whisper listens to what the agent played.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from duplex.agents import (
    Agent,
    AgentInterrupted,
    AgentSession,
    AgentTranscribed,
    Message,
    ToolExecuted,
    TurnOptions,
    function_tool,
)
from duplex.agents.testing import MemoryTransport
from duplex.backends.cascade import CascadeBackend, ChatCompletionsLLM, EchoLLM, offline_backend
from duplex.plugins.piper import PiperTTS
from duplex.plugins.webrtcvad import WebRTCVAD
from duplex.plugins.whisper import WhisperSTT

from ..speech import speak
from .chat_server import Call, ChatServer, Gate, Text
from .helpers import hear, words
from .vllm_server import Transcriber

TURN = TurnOptions(prefix_padding_ms=200, silence_duration_ms=500, min_speech_ms=100)


class Weather(Agent):
    instructions = "You tell the weather."

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    @function_tool
    async def forecast(self, city: str) -> str:
        """The weather forecast. city: which city."""
        self.asked.append(city)
        return f"sunny and warm in {city}"


@pytest.fixture
async def llm(chat_server: ChatServer) -> AsyncIterator[ChatCompletionsLLM]:
    client = ChatCompletionsLLM(chat_server.url, "Qwen/Qwen3-8B")
    yield client
    await client.aclose()


async def start(
    backend: CascadeBackend, agent: Agent, playout: str = "auto"
) -> tuple[AgentSession, MemoryTransport]:
    transport = MemoryTransport(input_rate=48000, output_rate=48000, playout=playout)  # type: ignore[arg-type]
    session = AgentSession(agent=agent, backend=backend, vad=WebRTCVAD(mode=2), turn=TURN)
    await session.start(transport)
    return session, transport


def final_reply(text: str) -> object:
    return lambda e: e.final and text in words(e.text)


async def test_spoken_question_tool_call_and_spoken_answer(
    chat_server: ChatServer,
    llm: ChatCompletionsLLM,
    whisper_stt: WhisperSTT,
    piper: PiperTTS,
    transcriber: Transcriber,
) -> None:
    chat_server.script(
        Text("Let me look that up. "), Call("forecast", json.dumps({"city": "Paris"}))
    )
    chat_server.script(Text("It is sunny and warm in Paris today."))
    agent = Weather()
    session, transport = await start(CascadeBackend(whisper_stt, llm, piper), agent)
    try:
        executed = asyncio.ensure_future(session.wait_for(ToolExecuted))
        answered = asyncio.ensure_future(session.wait_for(AgentTranscribed, final_reply("warm")))
        transport.push(speak("What is the weather in Paris today?", 48000))
        transport.push_silence(800)
        tool = await asyncio.wait_for(executed, 30)
        assert tool.output.output == "sunny and warm in Paris"
        await asyncio.wait_for(answered, 30)
        await transport.output.wait_drained()
        assert agent.asked == ["Paris"]  # the tool really ran, with the model's arguments
        heard = words(hear(transcriber, [transport.output.audio()]))  # type: ignore[list-item]
        assert {"look", "sunny", "warm", "paris"} <= set(heard)
        kinds = [type(i).__name__ for i in session.conversation]
        assert kinds == ["Message", "Message", "FunctionCall", "FunctionCallOutput", "Message"]
        follow_up = chat_server.requests[1].body["messages"]
        assert follow_up[-1] == {
            "role": "tool",
            "tool_call_id": tool.call.call_id,
            "content": "sunny and warm in Paris",
        }
        assert list(session.backend_session.conversation) == list(session.conversation)  # type: ignore[attr-defined]
    finally:
        await session.aclose()


async def test_caller_barges_in_on_a_slow_llm(
    chat_server: ChatServer, llm: ChatCompletionsLLM, whisper_stt: WhisperSTT, piper: PiperTTS
) -> None:
    never = asyncio.Event()
    chat_server.script(
        Text("Here is the first part of a very long answer. "), Gate(never), Text("Unheard.")
    )
    chat_server.script(Text("Of course."))
    session, transport = await start(CascadeBackend(whisper_stt, llm, piper), Weather(), "manual")
    try:
        transport.push(speak("Tell me a joke.", 48000))
        transport.push_silence(700)
        played = await transport.output.play(600)  # the caller hears 600 ms of the reply...
        interrupted = asyncio.ensure_future(session.wait_for(AgentInterrupted))
        transport.push(speak("Please turn on the kitchen lights.", 48000))  # ...and barges in
        ev = await asyncio.wait_for(interrupted, 30)
        assert ev.played_ms == pytest.approx(played, abs=1)
        await asyncio.wait_for(chat_server.requests[0].disconnected.wait(), 10)  # LLM stream closed
        transport.push_silence(700)
        await asyncio.wait_for(session.wait_for(AgentTranscribed, final_reply("course")), 30)
        assistant = [
            i for i in session.conversation if isinstance(i, Message) and i.role == "assistant"
        ]
        cut = assistant[0]
        assert cut.truncated_ms == pytest.approx(played, abs=1)
        assert 0 < len(cut.text.split()) < 9 and "answer" not in cut.text  # only what was heard
        sent = chat_server.requests[1].body["messages"]
        assert {"role": "assistant", "content": cut.text} in sent
        assert "kitchen" in words(sent[-1]["content"])
    finally:
        await session.aclose()


async def test_offline_default_echoes_the_caller(
    monkeypatch: pytest.MonkeyPatch, transcriber: Transcriber
) -> None:
    monkeypatch.delenv("DUPLEX_LLM_URL", raising=False)
    monkeypatch.delenv("DUPLEX_LLM_MODEL", raising=False)
    default = offline_backend()
    assert isinstance(default.stt, WhisperSTT) and isinstance(default.tts, PiperTTS)
    assert isinstance(default.llm, EchoLLM)
    # The same default with Piper's random prosody off, so what Whisper hears is repeatable.
    backend = offline_backend(tts=PiperTTS(noise_scale=0.0, noise_w_scale=0.0))
    assert isinstance(backend.llm, EchoLLM)
    session, transport = await start(backend, Agent())
    try:
        answered = asyncio.ensure_future(session.wait_for(AgentTranscribed, final_reply("lights")))
        transport.push(speak("Please turn on the kitchen lights.", 48000))
        transport.push_silence(800)
        reply = await asyncio.wait_for(answered, 30)
        assert reply.text.startswith("You said:")
        await transport.output.wait_drained()
        heard = words(hear(transcriber, [transport.output.audio()]))  # type: ignore[list-item]
        assert {"you", "said", "kitchen", "lights"} <= set(heard)
    finally:
        await session.aclose()
        await backend.aclose()


def test_offline_default_uses_a_chat_server_when_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DUPLEX_LLM_URL", "http://127.0.0.1:8000/v1")
    monkeypatch.setenv("DUPLEX_LLM_MODEL", "Qwen/Qwen3-8B")
    monkeypatch.setenv("DUPLEX_LLM_API_KEY", "sk-secret")
    backend = offline_backend()
    assert isinstance(backend.llm, ChatCompletionsLLM)
    assert backend.llm.url == "http://127.0.0.1:8000/v1/chat/completions"
    assert "sk-secret" not in repr(backend.llm)
