"""OpenAI Realtime with server VAD off: the end-of-turn model decides when to commit."""

from __future__ import annotations

import base64

import pytest

from duplex.agents import Agent, AgentSession, AgentStateChanged, TurnOptions
from duplex.agents.testing import MemoryTransport
from duplex.plugins.webrtcvad import WebRTCVAD

from ..openai.helpers import backend
from ..openai.server import RealtimeTestServer, Reply
from ..speech import concat, silence, speak
from .test_session_turns import Fixed


async def sent_before_commit_ms(turn: TurnOptions) -> float:
    """Audio sent up to the commit, each run against a fresh server."""
    server = RealtimeTestServer()
    await server.start()
    try:
        return await _run(server, turn)
    finally:
        await server.close()
        assert not server.schema_errors, "\n".join(server.schema_errors)


async def _run(server: RealtimeTestServer, turn: TurnOptions) -> float:
    server.transcripts.append("a table for two")
    server.replies.append(Reply(text="Done.", audio_ms=200))
    session = AgentSession(
        agent=Agent(instructions=""),
        backend=backend(server, turn_detection=None),
        vad=WebRTCVAD(2),
        turn=turn,
    )
    transport = MemoryTransport(input_rate=16000, output_rate=48000)
    await session.start(transport)
    try:
        transport.push(concat(silence(0.3), speak("A table for two, please.", 16000), silence(2.0)))
        await session.wait_for(AgentStateChanged, lambda e: e.old == "speaking", timeout=20)
        kinds = [t for t in server.received_types() if t != "input_audio_buffer.append"]
        assert kinds[-2:] == ["input_audio_buffer.commit", "response.create"]
        appends = server.of_type("input_audio_buffer.append")
        return sum(len(base64.b64decode(e["audio"])) for e in appends) / 48  # 24 kHz PCM16
    finally:
        await session.aclose()


async def test_a_complete_verdict_commits_300_ms_sooner() -> None:
    model = Fixed(0.9)
    with_model = await sent_before_commit_ms(TurnOptions(end_of_turn=model))
    assert model.asked == 1
    with_rule = await sent_before_commit_ms(TurnOptions())
    assert with_rule - with_model == pytest.approx(300, abs=60)
