"""Replies own their lifecycle: a barge-in cuts only what the caller did not hear.

`ScriptedBackend` + `MemoryTransport` with the manual clock, so the test knows
exactly what the caller heard; what was heard is read from the transport's
played frames, never from the session's bookkeeping.
"""

from __future__ import annotations

import asyncio

import pytest

from duplex.agents import (
    Agent,
    AgentInterrupted,
    AgentSession,
    AgentStateChanged,
    AudioFrame,
    ConversationItemAdded,
    EnergyVAD,
    Message,
    MetricsCollected,
    ToolExecuted,
    function_tool,
)
from duplex.agents.testing import MemoryTransport, Reply, ScriptedBackend, ScriptedCall, tone

from .test_session import TURN, speak


async def start(backend: ScriptedBackend, agent: Agent | None = None, **kw: object):
    transport = MemoryTransport(input_rate=48000, output_rate=48000, playout="manual")
    session = AgentSession(
        agent=agent or Agent(),
        backend=backend,
        vad=EnergyVAD(),
        turn=TURN,
        **kw,  # type: ignore[arg-type]
    )
    await session.start(transport)
    return session, transport


def assistant_added(session: AgentSession) -> asyncio.Future[ConversationItemAdded]:
    return session.next_event(
        ConversationItemAdded, lambda e: isinstance(e.item, Message) and e.item.role == "assistant"
    )


def played_ms(transport: MemoryTransport) -> float:
    return sum(p.frame.duration_ms for p in transport.output.played)


async def test_barge_in_on_the_second_reply_leaves_the_first_untouched() -> None:
    backend = ScriptedBackend(
        [
            Reply(text="alpha beta gamma", audio_ms=300),
            Reply(text="one two three four five six seven eight nine ten", audio_ms=1000),
            Reply(text="ok", audio_ms=100),
        ]
    )
    session, transport = await start(backend)
    first = assistant_added(session)
    speak(transport)
    a = (await first).item
    await backend.session.handles[0].done
    accounted = session.next_event(MetricsCollected)
    assert await transport.output.play(300) == 300  # reply A heard in full
    assert (await asyncio.wait_for(accounted, 5)).metrics.played_ms == pytest.approx(300)
    second = assistant_added(session)
    speak(transport)
    b = (await second).item
    await backend.session.handles[1].done
    await transport.output.play(400)
    interrupted = session.next_event(AgentInterrupted)
    speak(transport, ms=300)
    ev = await asyncio.wait_for(interrupted, 5)
    await backend.session.wait_for_call("truncate")
    await backend.session.wait_for_call("create_response", count=3)
    truncates = [c.args for c in backend.session.called("truncate")]
    assert truncates == [{"item_id": b.id, "audio_end_ms": 400}]  # B only, at what was heard
    assert ev.item_id == b.id and ev.played_ms == pytest.approx(400) and not ev.resumed
    assert played_ms(transport) == pytest.approx(700)
    kept_a = session.conversation.get(a.id)
    assert isinstance(kept_a, Message)
    assert kept_a.truncated_ms is None and kept_a.text == "alpha beta gamma"
    kept_b = session.conversation.get(b.id)
    assert isinstance(kept_b, Message) and kept_b.truncated_ms == 400
    assert backend.session.errors == []
    await session.aclose()


async def test_barge_in_during_the_tail_of_a_finished_reply_cuts_it_and_drops_the_next() -> None:
    """Reply A is done on the backend but still playing when B starts: a barge-in cuts A to
    what was heard and deletes B, whose audio nobody heard."""
    backend = ScriptedBackend(
        [Reply(text="first answer here", audio_ms=600), Reply(text="second", audio_ms=400)]
    )
    session, transport = await start(backend)
    first = assistant_added(session)
    speak(transport)
    a = (await first).item
    await backend.session.handles[0].done
    await transport.output.play(200)
    second = assistant_added(session)
    await session.generate_reply()
    b = (await second).item
    await backend.session.handles[1].done
    interrupted = session.next_event(AgentInterrupted)
    speak(transport, ms=300)
    ev = await asyncio.wait_for(interrupted, 5)
    await backend.session.wait_for_call("truncate")
    await backend.session.wait_for_call("sync", count=2)
    assert [c.args for c in backend.session.called("truncate")] == [
        {"item_id": a.id, "audio_end_ms": 200}
    ]
    assert ev.item_id == a.id and ev.played_ms == pytest.approx(200)
    assert b.id not in session.conversation and b.id not in [i.id for i in backend.session.mirror]
    assert played_ms(transport) == pytest.approx(200)
    await session.aclose()


async def test_false_interruption_resumes_without_truncating() -> None:
    backend = ScriptedBackend(
        [Reply(text="a long reply to listen to", audio_ms=1000)],
        user_transcripts=["question", ""],  # the second "turn" is a cough: no words
    )
    session, transport = await start(backend, resume_false_interruption=True)
    speak(transport)
    await backend.session.wait_for_call("create_response")
    await backend.session.handles[0].done
    await transport.output.play(300)
    resumed = session.next_event(AgentInterrupted)
    speak(transport, ms=200)
    ev = await asyncio.wait_for(resumed, 5)
    assert ev.resumed and ev.played_ms == pytest.approx(300)
    await transport.output.play(700)  # the rest of the reply, from where it paused
    assert played_ms(transport) == pytest.approx(1000)
    assert [kind for _, kind in transport.output.pauses] == ["pause", "resume"]
    assert transport.output.clears == []
    assert backend.session.called("truncate") == []
    assert backend.session.called("cancel_response") == []
    assert len(backend.session.called("create_response")) == 1  # the cough asked for nothing
    await session.aclose()


async def test_interruption_with_words_cuts_at_the_pause() -> None:
    backend = ScriptedBackend(
        [Reply(text="one two three four five six", audio_ms=1000, hold=True), Reply(text="ok")],
        user_transcripts=["question", "stop please"],
    )
    session, transport = await start(backend, resume_false_interruption=True)
    added = assistant_added(session)
    speak(transport)
    item = (await added).item
    await transport.output.play(300)
    cut = session.next_event(AgentInterrupted)
    speak(transport, ms=300)
    ev = await asyncio.wait_for(cut, 5)
    assert not ev.resumed and ev.item_id == item.id and ev.played_ms == pytest.approx(300)
    call = await backend.session.wait_for_call("truncate")
    assert call.args == {"item_id": item.id, "audio_end_ms": 300}
    await backend.session.wait_for_call("cancel_response")
    await backend.session.wait_for_call("create_response", count=2)
    assert played_ms(transport) == pytest.approx(300)
    await session.aclose()


async def test_server_vad_false_interruption_times_out_and_resumes() -> None:
    """No transcript at all within the timeout: the reply resumes."""
    backend = ScriptedBackend(
        [Reply(text="hello there", audio_ms=600)], server_vad=True, server_interrupts=True
    )
    transport = MemoryTransport(input_rate=48000, output_rate=48000, playout="manual")
    session = AgentSession(
        agent=Agent(),
        backend=backend,
        resume_false_interruption=True,
        false_interruption_timeout=0.05,
    )
    await session.start(transport)
    # The server's own cancel and reply on speech are turned off: the session decides.
    assert backend.session.options == {"server_interrupts": False, "server_replies": False}
    await session.generate_reply()
    await backend.session.handles[0].done
    await transport.output.play(200)
    resumed = session.next_event(AgentInterrupted)
    backend.session.speech_started()
    backend.session.speech_stopped()
    ev = await asyncio.wait_for(resumed, 5)
    assert ev.resumed
    await transport.output.play(400)
    assert played_ms(transport) == pytest.approx(600)
    assert backend.session.called("truncate") == []
    await session.aclose()


class Quiet(Agent):
    allow_interruptions = False


async def test_agent_interruption_options_override_the_session() -> None:
    backend = ScriptedBackend([Reply(text="a", audio_ms=400), Reply(text="b", audio_ms=100)])
    session, transport = await start(backend, Quiet(), allow_interruptions=True)
    assert not session.allow_interruptions
    speak(transport)
    await backend.session.wait_for_call("create_response")
    await backend.session.handles[0].done
    await transport.output.play(100)
    speak(transport, ms=300)
    await transport.output.play(300)  # plays on to the end
    await backend.session.wait_for_call("create_response", count=2)
    assert backend.session.called("truncate") == []
    assert played_ms(transport) == pytest.approx(400)
    await session.aclose()


async def test_update_tools_reaches_the_backend_and_the_runner() -> None:
    ran: list[str] = []

    @function_tool
    async def lookup(code: str) -> str:
        """Look a code up."""
        ran.append(code)
        return f"{code} ok"

    backend = ScriptedBackend(
        [Reply(calls=(ScriptedCall("lookup", {"code": "X1"}),)), Reply(text="done")]
    )
    session, _ = await start(backend)
    await session.update_tools([lookup])
    assert backend.session.called("update_tools")[-1].args == {"names": ["lookup"]}
    executed = session.next_event(ToolExecuted)
    await session.generate_reply()
    out = (await asyncio.wait_for(executed, 5)).output
    assert ran == ["X1"] and out.output == "X1 ok" and not out.is_error
    await session.aclose()


async def test_update_options_reaches_the_backend() -> None:
    backend = ScriptedBackend([])
    session, _ = await start(backend)
    await session.update_options(voice="cedar", temperature=0.8, max_output_tokens=200)
    call = backend.session.called("update_options")[-1]
    assert call.args == {"voice": "cedar", "temperature": 0.8, "max_output_tokens": 200}
    await session.aclose()


async def test_reply_lifecycle_states_follow_the_audio() -> None:
    backend = ScriptedBackend([Reply(text="hi", audio_ms=200)])
    session, transport = await start(backend)
    states: list[str] = []
    session.on(AgentStateChanged, lambda e: states.append(e.new))
    await session.generate_reply()
    await backend.session.handles[0].done
    listening = session.next_event(AgentStateChanged, lambda e: e.new == "listening")
    await transport.output.play(200)
    await asyncio.wait_for(listening, 5)
    assert states == ["thinking", "speaking", "listening"]
    assert tone(10, 48000).sample_rate == 48000
    await session.aclose()


def test_emitter_matches_handlers_and_waiters_by_one_rule() -> None:
    from duplex.agents.emitter import Emitter

    class Base:
        pass

    class Derived(Base):
        pass

    async def run() -> None:
        em = Emitter()
        seen: list[object] = []
        em.on(Base, seen.append)
        waiter = em.next_event(Base)
        ev = Derived()
        em.emit(ev)
        assert seen == [ev] and waiter.result() is ev

    asyncio.run(run())


async def test_local_vad_end_to_end_starts_at_the_last_speech_sample() -> None:
    """Local VAD: end-to-end runs from the capture of the caller's last speech sample (not
    from the end-of-turn decision a silence window later) to the first reply frame."""
    from .openai.test_agent_replies import Mic

    backend = ScriptedBackend([Reply(text="hi", audio_ms=200)])
    transport = MemoryTransport(input_rate=48000, output_rate=48000, playout="auto")
    session = AgentSession(agent=Agent(), backend=backend, vad=EnergyVAD(), turn=TURN)
    await session.start(transport)
    mic = Mic(transport)
    metrics = session.next_event(MetricsCollected)
    silence = tone(200, 48000, level=0.0)
    await mic.say(AudioFrame.concat([silence, tone(400, 48000, freq=300.0), silence, silence]))
    m = (await asyncio.wait_for(metrics, 5)).metrics
    truth = (transport.output.played[0].wall - mic.captured_at(600)) * 1000.0
    # The caller waited through the silence window (less one frame: the frame that carried
    # the last speech sample may itself have been delivered late by the loop).
    assert truth > TURN.silence_duration_ms - 20.0
    assert m.end_to_end_ms == pytest.approx(truth, abs=2 * 20.0)  # VAD frame + resampler
    await session.aclose()


async def test_an_output_that_cannot_pause_is_cut_even_in_resume_mode() -> None:
    from duplex.agents.testing.memory import MemoryAudioOutput

    class NoPause(MemoryAudioOutput):
        def pause(self) -> bool:
            return False  # like a third-party output without the core buffer's pause

    backend = ScriptedBackend(
        [Reply(text="a long reply", audio_ms=1000), Reply(text="ok", audio_ms=100)],
        user_transcripts=["question", ""],
    )
    transport = MemoryTransport(input_rate=48000, output_rate=48000, playout="manual")
    transport.audio_output = NoPause(48000, 1, "manual")
    session = AgentSession(
        agent=Agent(), backend=backend, vad=EnergyVAD(), turn=TURN, resume_false_interruption=True
    )
    await session.start(transport)
    speak(transport)
    await backend.session.wait_for_call("create_response")
    await backend.session.handles[0].done
    await transport.output.play(300)
    cut = session.next_event(AgentInterrupted)
    speak(transport, ms=200)
    ev = await asyncio.wait_for(cut, 5)
    assert not ev.resumed and ev.played_ms == pytest.approx(300)
    call = await backend.session.wait_for_call("truncate")
    assert call.args["audio_end_ms"] == 300
    await session.aclose()
