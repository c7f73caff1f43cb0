"""The session's key flows with real speech (espeak-ng) and the real VAD plugins."""

from __future__ import annotations

import pytest

from duplex.agents import (
    Agent,
    AgentInterrupted,
    AgentSession,
    AgentStateChanged,
    Message,
    MetricsCollected,
    ToolExecuted,
    TurnOptions,
    UserStateChanged,
    function_tool,
)
from duplex.agents.testing import MemoryTransport, Reply, ScriptedBackend, ScriptedCall
from duplex.plugins.silero import SileroVAD
from duplex.plugins.webrtcvad import WebRTCVAD
from tests.speech import espeak_available, speak

pytestmark = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")

TURN = TurnOptions(prefix_padding_ms=200, silence_duration_ms=400, min_speech_ms=100)


class Weather(Agent):
    instructions = "You tell the weather."

    @function_tool
    async def forecast(self, city: str) -> str:
        """The weather forecast. city: which city."""
        return f"sunny in {city}"


@pytest.fixture(params=["webrtcvad", "silero"])
def vad(request: pytest.FixtureRequest) -> WebRTCVAD | SileroVAD:
    return WebRTCVAD(mode=2) if request.param == "webrtcvad" else SileroVAD()


async def test_spoken_question_tool_and_answer(vad: WebRTCVAD | SileroVAD) -> None:
    backend = ScriptedBackend(
        [
            Reply(
                text="Let me look",
                audio_ms=400,
                calls=(ScriptedCall("forecast", {"city": "Oslo"}),),
            ),
            Reply(text="It is sunny in Oslo", audio_ms=800),
        ],
        user_transcripts=["what is the weather in Oslo"],
    )
    transport = MemoryTransport(input_rate=48000, playout="auto")
    session = AgentSession(agent=Weather(), backend=backend, vad=vad, turn=TURN)
    states: list[str] = []
    session.on(AgentStateChanged, lambda e: states.append(e.new))
    await session.start(transport)
    executed = session.next_event(ToolExecuted)
    question = speak("What is the weather in Oslo today?", 48000)
    transport.push_silence(500)
    transport.push(question)
    transport.push_silence(1000)
    assert (await executed).output.output == "sunny in Oslo"
    await backend.session.wait_for_call("create_response", count=2)
    await session.wait_for(MetricsCollected, lambda e: e.metrics.played_ms > 700)
    # One turn: exactly one commit, with about the question's length of audio (plus padding).
    commits = backend.session.called("commit_audio")
    assert len(commits) == 1
    sent_ms = 1000 * commits[0].args["samples"] / 24000
    # (webrtcvad keeps a short hangover after speech, so allow 300 ms beyond the padding)
    assert question.duration_ms - 150 <= sent_ms <= question.duration_ms + 200 + 400 + 300
    assert "thinking" in states and "speaking" in states and states[-1] == "listening"
    texts = [it.text for it in session.conversation if isinstance(it, Message)]
    assert texts == ["what is the weather in Oslo", "Let me look", "It is sunny in Oslo"]
    await session.aclose()


async def test_spoken_barge_in_truncates(vad: WebRTCVAD | SileroVAD) -> None:
    backend = ScriptedBackend(
        [Reply(text="a long answer", audio_ms=3000), Reply(text="ok", audio_ms=200)]
    )
    transport = MemoryTransport(input_rate=16000, playout="manual")
    session = AgentSession(agent=Weather(), backend=backend, vad=vad, turn=TURN)
    await session.start(transport)
    user_speaking = session.next_event(UserStateChanged, lambda e: e.new == "speaking")
    transport.push(speak("Tell me a story.", 16000))
    transport.push_silence(600)
    await user_speaking
    await backend.session.wait_for_call("create_response")
    await backend.session.handles[0].done
    await transport.output.play(500)
    interrupted = session.next_event(AgentInterrupted)
    transport.push(speak("Wait, stop please.", 16000))
    transport.push_silence(600)
    ev = await interrupted
    assert ev.played_ms == pytest.approx(500)
    truncate = await backend.session.wait_for_call("truncate")
    assert truncate.args["audio_end_ms"] == 500
    assert backend.session.errors == []
    await session.aclose()
