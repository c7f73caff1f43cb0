"""A whole AgentSession in a (simulated) room: the caller speaks into a real native track,
the agent's reply is heard on its published track, transcripts and state reach the room,
and a barge-in cuts the reply at the position the caller really heard."""

from __future__ import annotations

import asyncio

import pytest

from duplex.agents import (
    Agent,
    AgentInterrupted,
    AgentSession,
    AgentStateChanged,
    EnergyVAD,
    TurnOptions,
)
from duplex.agents.testing import Reply, ScriptedBackend
from duplex.plugins.livekit import ATTR_AGENT_STATE, ATTR_FINAL, ATTR_SEGMENT_ID

from .conftest import tone
from .sim import SimulatedRoom

TURN = TurnOptions(threshold=0.5, prefix_padding_ms=100, silence_duration_ms=200, min_speech_ms=60)


class Greeter(Agent):
    instructions = "Greet people."


async def _start(room: SimulatedRoom, make_transport, backend: ScriptedBackend):
    caps = backend.capabilities
    t = await make_transport(
        start=False, input_rate=caps.input_sample_rate, output_rate=caps.output_sample_rate
    )
    session = AgentSession(agent=Greeter(), backend=backend, vad=EnergyVAD(), turn=TURN)
    await session.start(t)
    await room.join("alice")
    mic = await room.publish_mic("alice", sample_rate=48000)
    return t, session, mic


async def _speak(mic, ms: float = 400) -> None:
    await mic.say(tone(300, ms, 48000, level=0.3))
    await mic.say(tone(300, 400, 48000, level=0.0))  # silence ends the turn


async def test_spoken_turn_is_answered_in_the_room(room: SimulatedRoom, make_transport) -> None:
    backend = ScriptedBackend(
        [Reply(text="Hello there, how can I help?", audio_ms=600)], user_transcripts=["hi"]
    )
    t, session, mic = await _start(room, make_transport, backend)
    heard = room.agent_audio(24000)
    done_speaking = asyncio.ensure_future(
        session.wait_for(AgentStateChanged, lambda e: e.old == "speaking", timeout=10)
    )
    await _speak(mic)
    await backend.session.wait_for_call("create_response", timeout=5)
    loud_ms = quiet_ms = 0.0
    async for f in heard:  # the reply as a subscriber of the agent's track receives it
        if f.rms() > 0.05:
            loud_ms, quiet_ms = loud_ms + f.duration_ms, 0.0
        elif loud_ms:
            quiet_ms += f.duration_ms
            if quiet_ms > 200:
                break
    assert loud_ms == pytest.approx(600, abs=40)
    assert (await done_speaking).new == "listening"
    await t.flush_text()

    segs = room.local.transcriptions()
    user = [s for s in segs if s.sender_identity == "alice"]
    agent = [s for s in segs if s.sender_identity == "agent"]
    assert user[-1].text == "hi" and user[-1].final_attributes[ATTR_FINAL] == "true"
    assert agent[-1].final_attributes[ATTR_FINAL] == "true"
    assert "".join(
        s.text
        for s in agent
        if s.final_attributes[ATTR_SEGMENT_ID] == agent[-1].attributes[ATTR_SEGMENT_ID]
    ).startswith("Hello there")
    states = [u[ATTR_AGENT_STATE] for u in room.local.attribute_updates]
    assert states[0] == "listening" and "speaking" in states and states[-1] == "listening"
    await session.aclose()


async def test_barge_in_truncates_to_what_the_caller_heard(
    room: SimulatedRoom, make_transport
) -> None:
    backend = ScriptedBackend(
        [Reply(text="a long answer " * 10, audio_ms=4000), Reply(text="ok", audio_ms=100)]
    )
    t, session, mic = await _start(room, make_transport, backend)
    heard = room.agent_audio(24000)
    await _speak(mic)
    heard_ms = 0.0
    async for f in heard:
        if f.rms() > 0.05:
            heard_ms += f.duration_ms
            if heard_ms >= 800:
                break
    interrupted = asyncio.ensure_future(session.wait_for(AgentInterrupted, timeout=5))
    speaking = asyncio.ensure_future(mic.say(tone(300, 500, 48000, level=0.3)))
    ev = await interrupted
    truncate = await backend.session.wait_for_call("truncate", timeout=5)
    # the position sent to the model is what left the room's audio queue
    assert truncate.args["audio_end_ms"] == pytest.approx(ev.played_ms, abs=25)
    assert 800 <= ev.played_ms <= 800 + 200 + 300  # + VAD onset + our 240 ms buffer
    assert t.audio_output.buffered_ms == 0
    # and the caller stops hearing the agent right away
    tail = 0.0
    quiet = 0.0
    async for f in heard:
        if f.rms() > 0.05:
            tail += f.duration_ms
        else:
            quiet += f.duration_ms
            if quiet >= 200:
                break
    assert tail < 350  # what was queued before the onset was detected, at most
    await speaking
    await session.aclose()
