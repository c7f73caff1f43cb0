"""Idle callers: silence after the agent spoke prompts once more, then ends the call."""

from __future__ import annotations

import asyncio

from duplex.agents import Agent, AgentSession, AgentStateChanged, EnergyVAD, UserIdle
from duplex.agents.testing import ManualScheduler, MemoryTransport, Reply, ScriptedBackend

from .test_session import TURN, speak


def finished_speaking(session: AgentSession) -> asyncio.Future[AgentStateChanged]:
    return session.next_event(
        AgentStateChanged, lambda e: e.old == "speaking" and e.new == "listening"
    )


async def start(
    replies: list[Reply], clock: ManualScheduler, **options: object
) -> tuple[AgentSession, MemoryTransport, ScriptedBackend]:
    backend = ScriptedBackend(replies)
    transport = MemoryTransport(output_rate=24000, playout="auto")
    session = AgentSession(
        agent=Agent(),
        backend=backend,
        vad=EnergyVAD(),
        turn=TURN,
        scheduler=clock,
        **options,  # type: ignore[arg-type]
    )
    await session.start(transport)
    return session, transport, backend


async def greet(session: AgentSession) -> None:
    done = finished_speaking(session)
    await session.generate_reply()
    await done


async def test_no_timer_before_the_agent_has_spoken_and_one_after() -> None:
    clock = ManualScheduler()
    session, _, backend = await start([Reply(text="hi", audio_ms=200)], clock)
    assert clock.advance(60) == 0  # waiting for the caller to start is not idleness
    await greet(session)
    idle = session.next_event(UserIdle)
    assert clock.advance(14.9) == 0
    assert clock.advance(0.2) == 1
    assert (await idle).count == 1
    prompt = await backend.session.wait_for_call("create_response", count=2)
    assert "still there" in prompt.args["instructions"]
    await session.aclose()


async def test_caller_speech_resets_the_timer_and_the_count() -> None:
    clock = ManualScheduler()
    replies = [Reply(text="hi", audio_ms=200), Reply(text="still there?", audio_ms=200)]
    replies.append(Reply(text="answer", audio_ms=200))
    session, transport, backend = await start(replies, clock)
    await greet(session)
    done = finished_speaking(session)
    clock.advance(15)  # first silence: the agent asks
    await done
    # The caller answers: no idle event for their turn, and the count starts again.
    done = finished_speaking(session)
    speak(transport)
    await backend.session.wait_for_call("create_response", count=3)
    assert clock.pending == 0  # speaking and the reply disarmed the timer
    await done
    idle = session.next_event(UserIdle)
    clock.advance(15)
    assert (await idle).count == 1
    await session.aclose()


async def test_typed_text_resets_the_count() -> None:
    clock = ManualScheduler()
    replies = [Reply(text="hi", audio_ms=200), Reply(text="there?", audio_ms=200)]
    replies += [Reply(text="typed answer", audio_ms=200), Reply(text="again?", audio_ms=200)]
    session, _, _ = await start(replies, clock)
    await greet(session)
    done = finished_speaking(session)
    clock.advance(15)
    await done
    done = finished_speaking(session)
    await session.send_text("I'm here")
    await done
    idle = session.next_event(UserIdle)
    clock.advance(15)
    assert (await idle).count == 1
    await session.aclose()


async def test_the_call_ends_after_the_configured_prompts() -> None:
    clock = ManualScheduler()
    replies = [Reply(text=t, audio_ms=200) for t in ("hi", "there?", "hello?")]
    session, transport, backend = await start(replies, clock, max_idle_prompts=2)
    await greet(session)
    for count in (1, 2):
        done = finished_speaking(session)
        clock.advance(15)
        await done
        assert len(backend.session.called("create_response")) == 1 + count
    clock.advance(15)
    await asyncio.wait_for(session.closed.wait(), 10)
    assert transport.closed.is_set()
    assert len(backend.session.called("create_response")) == 3  # no fourth prompt


async def test_idle_prompts_off() -> None:
    clock = ManualScheduler()
    session, _, _ = await start([Reply(text="hi", audio_ms=200)], clock, user_idle_timeout=None)
    await greet(session)
    assert clock.pending == 0 and clock.advance(600) == 0
    await session.aclose()
