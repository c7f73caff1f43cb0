"""A planned rollover requested at every point of a turn: each caller turn is answered once.

The rollover waits for a true quiet window: nothing committed and unanswered (server
VAD answers on its own, after the transcript), no reply active or requested, no tool
output outstanding. Each test asks for the rollover while the turn sits at one point.
"""

from __future__ import annotations

import asyncio

import pytest

from duplex.agents.backend import (
    FunctionCallRequested,
    Reconnected,
    ResponseDone,
    ResponseStarted,
)
from duplex.agents.conversation import Conversation, FunctionCallOutput
from duplex.backends.openai import OpenAIRealtimeSession, ReconnectPolicy

from .helpers import Collector, backend, say, utterance
from .server import RealtimeTestServer, Reply

FAST = ReconnectPolicy(max_attempts=4, initial_delay=0.01, max_delay=0.05)


async def _open(server: RealtimeTestServer) -> tuple[OpenAIRealtimeSession, Collector]:
    conv = Conversation()
    session = await backend(server, reconnect=FAST).connect(
        instructions="x", tools=[], conversation=conv
    )
    return session, Collector(session, conv)


def _answered_once_then_rolled(col: Collector, server: RealtimeTestServer) -> None:
    started = [e.response_id for e in col.of(ResponseStarted)]
    done = [e for e in col.of(ResponseDone)]
    assert sorted(started) == sorted(e.response_id for e in done)  # none left active
    assert all(e.status == "completed" for e in done)
    rolled = col.of(Reconnected)
    assert len(rolled) == 1 and rolled[0].planned
    # The rollover came after the last reply ended, on the quiet connection.
    assert col.events.index(rolled[0]) > col.events.index(done[-1])
    assert server.connections[0].active is None and server.connections[1].active is None
    assert not [e for n, e in server.received if n == 1 and e["type"] == "response.create"]


@pytest.mark.parametrize("point", ["after_commit", "before_response"])
async def test_rollover_between_commit_and_reply(server: RealtimeTestServer, point: str) -> None:
    """Between commit and transcript, and between transcript and server VAD's reply."""
    reached, release = server.hold_at(point)
    session, col = await _open(server)
    await say(session, utterance())
    await asyncio.wait_for(reached.wait(), 10)
    session.request_rollover()
    await asyncio.wait_for(session.rollover_pending.wait(), 5)
    release.set()
    await col.wait_for(Reconnected, timeout=10)
    assert len(col.of(ResponseStarted)) == 1  # the turn was answered, and only once
    _answered_once_then_rolled(col, server)
    await session.aclose()
    await col.aclose()


async def test_rollover_during_a_reply(server: RealtimeTestServer) -> None:
    reply = Reply(text="It is sunny in Paris today", audio_ms=800, hold_after_ms=200)
    server.replies.append(reply)
    session, col = await _open(server)
    await say(session, utterance())
    await col.wait_for(ResponseStarted, timeout=10)
    session.request_rollover()
    await asyncio.wait_for(session.rollover_pending.wait(), 5)
    reply.release.set()
    await col.wait_for(Reconnected, timeout=10)
    done = col.of(ResponseDone)
    assert len(done) == 1
    _answered_once_then_rolled(col, server)
    await session.aclose()
    await col.aclose()


async def test_rollover_during_a_tool_call(server: RealtimeTestServer) -> None:
    server.replies.extend(
        [Reply(text="", function_calls=(("weather", '{"city": "Paris"}'),)), Reply(text="Sunny.")]
    )
    session, col = await _open(server)
    await say(session, utterance())
    call = await col.wait_for(FunctionCallRequested, timeout=10)
    await col.wait_for(ResponseDone, timeout=10)  # the call's response ended; the tool runs
    session.request_rollover()
    await asyncio.wait_for(session.rollover_pending.wait(), 5)
    assert not col.of(Reconnected)  # a tool output is outstanding: not quiet
    col.conversation.append(FunctionCallOutput(call.call_id, "sunny", name="weather"))
    await session.sync(col.conversation)
    follow_up = await session.create_response()
    assert (await asyncio.wait_for(follow_up.done, 10)).status == "completed"
    await col.wait_for(Reconnected, timeout=10)
    for conn in server.connections:  # once in each server conversation (the second: replayed)
        outputs = [it for it in conn.items if it["type"] == "function_call_output"]
        assert [it["call_id"] for it in outputs] == [call.call_id]
    assert len(col.of(ResponseDone)) == 2
    _answered_once_then_rolled_tool(col, server)
    await session.aclose()
    await col.aclose()


def _answered_once_then_rolled_tool(col: Collector, server: RealtimeTestServer) -> None:
    started = [e.response_id for e in col.of(ResponseStarted)]
    assert sorted(started) == sorted(e.response_id for e in col.of(ResponseDone))
    rolled = col.of(Reconnected)
    assert len(rolled) == 1 and rolled[0].planned
    assert col.events.index(rolled[0]) > col.events.index(col.of(ResponseDone)[-1])
    assert all(c.active is None for c in server.connections)
