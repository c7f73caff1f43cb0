"""Behaviour through `AgentSession` + `MemoryTransport` with `OpenAIRealtime` on the wire."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from duplex.agents import Agent, AgentSession, function_tool
from duplex.agents.conversation import FunctionCallOutput, Message, diff
from duplex.agents.events import (
    AgentInterrupted,
    AgentStateChanged,
    ConversationItemAdded,
    ToolExecuted,
    UserTranscribed,
)
from duplex.agents.testing import MemoryTransport
from duplex.agents.vad import EnergyVAD
from duplex.backends.openai import OpenAIRealtime, OpenAIRealtimeSession
from tests.shop import Shop as BaseShop

from .helpers import backend, utterance
from .server import RealtimeTestServer, Reply


class Shop(BaseShop):
    """The shared shop plus a tool that always fails."""

    @function_tool
    async def refund(self, order: int) -> str:
        """Refund an order. order: its number."""
        raise RuntimeError("payment system down")


async def start(
    server: RealtimeTestServer, agent: Agent | None = None, *, playout: str = "auto", **options: Any
) -> tuple[AgentSession, MemoryTransport, OpenAIRealtime]:
    b = backend(server, **options)
    session = AgentSession(agent=agent or Shop(), backend=b)
    transport = MemoryTransport(input_rate=48000, output_rate=48000, playout=playout)  # type: ignore[arg-type]
    await session.start(transport)
    return session, transport, b


def wire(server: RealtimeTestServer) -> list[str]:
    return [it["id"] for it in server.current.items]


def in_sync(session: AgentSession) -> bool:
    remote = session.backend_session
    assert isinstance(remote, OpenAIRealtimeSession)
    return diff(remote.remote_items, session.conversation.items) == []


async def settled(server: RealtimeTestServer, session: AgentSession) -> None:
    """After the session's own pending requests, a sync sends nothing: both sides agree."""
    await session.sync()  # queued behind whatever the session is still sending
    n = len(server.received)
    await session.sync()
    assert len(server.received) == n and in_sync(session)
    assert [it.id for it in session.conversation] == wire(server)


async def answered(server: RealtimeTestServer, replies: int) -> None:
    """The server made ``replies`` replies (the barge-in turn is answered too) and is idle."""
    await server.wait_until(
        lambda: len(server.current.responses) == replies and server.current.active is None
    )


async def test_full_spoken_turn(server: RealtimeTestServer) -> None:
    server.transcripts.append("a large pizza please")
    server.replies.append(Reply(text="Coming right up.", audio_ms=800))
    session, transport, _ = await start(server)
    transport.push(utterance("a large pizza please", rate=48000))
    heard = await session.wait_for(UserTranscribed, lambda e: e.final, timeout=10)
    assert heard.text == "a large pizza please"
    await session.wait_for(AgentStateChanged, lambda e: e.old == "speaking", timeout=10)
    assert transport.output.played_ms == 800
    user, reply = session.conversation.items
    assert isinstance(user, Message) and user.text == "a large pizza please"
    assert isinstance(reply, Message) and reply.text == "Coming right up." and reply.complete
    await settled(server, session)
    assert wire(server) == [user.id, reply.id]
    assert sum(server.errors_sent.values()) == 0
    await session.aclose()


async def test_local_vad_turn(server: RealtimeTestServer) -> None:
    """Without server VAD the session's own VAD ends the turn: commit, then one reply."""
    server.transcripts.append("a small one")
    server.replies.append(Reply(text="Small it is.", audio_ms=400))
    b = backend(server, turn_detection=None)
    session = AgentSession(agent=Shop(), backend=b, vad=EnergyVAD())
    transport = MemoryTransport(input_rate=16000, output_rate=48000)
    await session.start(transport)
    transport.push(utterance("a small one", rate=16000))
    await session.wait_for(AgentStateChanged, lambda e: e.old == "speaking", timeout=10)
    kinds = [t for t in server.received_types() if t != "input_audio_buffer.append"]
    assert kinds[-2:] == ["input_audio_buffer.commit", "response.create"]
    assert transport.output.played_ms == 400
    await settled(server, session)
    user = session.conversation.items[0]
    assert isinstance(user, Message) and user.text == "a small one"
    # only speech (with its prefix padding) went up, not the leading silence
    appends = server.of_type("input_audio_buffer.append")
    sent_ms = sum(len(base64.b64decode(e["audio"])) for e in appends) / 48  # 24 kHz PCM16
    assert sent_ms < utterance("a small one", rate=16000).duration_ms
    await session.aclose()


async def test_barge_in_truncates_to_what_was_played(server: RealtimeTestServer) -> None:
    server.replies.extend(
        [Reply(text="A very long answer " * 5, audio_ms=3000, hold_after_ms=1500)]
    )
    session, transport, _ = await start(server, playout="manual")
    await session.generate_reply()
    await transport.output.play(400)
    transport.push(utterance("wait", rate=48000))
    interrupted = await session.wait_for(AgentInterrupted, timeout=10)
    await server.wait_until(lambda: bool(server.of_type("conversation.item.truncate")))
    truncate = server.of_type("conversation.item.truncate")[0]
    assert interrupted.played_ms >= 400 and truncate["audio_end_ms"] == int(interrupted.played_ms)
    assert truncate["item_id"] == interrupted.item_id
    await answered(server, 2)
    await settled(server, session)
    item = session.conversation.get(interrupted.item_id or "")
    assert isinstance(item, Message) and item.truncated_ms == truncate["audio_end_ms"]
    assert server.of_type("response.cancel") == []  # server VAD cancelled it itself
    assert sum(server.errors_sent.values()) == 0
    await session.aclose()


async def test_barge_in_before_any_audio_was_heard_deletes_the_reply(
    server: RealtimeTestServer,
) -> None:
    server.replies.append(Reply(audio_ms=3000, hold_after_ms=300))
    session, transport, _ = await start(server, playout="manual")
    handle = await session.generate_reply()
    rid = await asyncio.wait_for(handle.created, 5)
    await server.wait_until(lambda: server.current.responses[-1].audio_sent_ms >= 300)
    reply_id = server.current.responses[-1].output[0]["id"]
    transport.push(utterance("no", rate=48000))
    await server.wait_until(lambda: bool(server.of_type("conversation.item.delete")))
    await answered(server, 2)
    await settled(server, session)
    assert reply_id not in wire(server)
    assert reply_id not in session.conversation
    assert server.of_type("conversation.item.truncate") == []
    assert sum(server.errors_sent.values()) == 0
    assert rid
    await session.aclose()


async def test_tool_output_survives_an_interruption_and_is_sent_once(
    server: RealtimeTestServer,
) -> None:
    agent = Shop()
    agent.gate = asyncio.Event()
    server.replies.extend(
        [
            Reply(text="", function_calls=(("order_pizza", '{"size": "large"}'),)),
            Reply(text="Sure."),
        ]
    )
    session, transport, _ = await start(server, agent)
    await session.generate_reply()
    await asyncio.wait_for(agent.one_started.wait(), 5)
    transport.push(utterance("actually make it small", rate=48000))  # the caller talks over it
    await session.wait_for(UserTranscribed, lambda e: e.final, timeout=10)
    agent.gate.set()  # the tool finishes after the interruption
    done = await session.wait_for(ToolExecuted, timeout=10)
    assert done.output.output == "order #1 placed: large"
    await settled(server, session)
    outputs = [
        e
        for e in server.of_type("conversation.item.create")
        if e["item"]["type"] == "function_call_output"
    ]
    assert len(outputs) == 1 and outputs[0]["item"]["output"] == "order #1 placed: large"
    assert agent.orders == ["large"]  # ran once
    assert any(it["type"] == "function_call_output" for it in server.current.items)
    await session.aclose()


async def test_concurrent_tools_then_one_follow_up(server: RealtimeTestServer) -> None:
    agent = Shop()
    gate = agent.gate = asyncio.Event()
    server.replies.extend(
        [
            Reply(
                text="",
                function_calls=(
                    ("order_pizza", '{"size": "small"}'),
                    ("order_pizza", '{"size": "large"}'),
                ),
            ),
            Reply(text="Two pizzas ordered."),
        ]
    )
    session, _transport, _ = await start(server, agent, turn_detection=None)
    await session.generate_reply()
    await asyncio.wait_for(agent.both_started.wait(), 5)  # both run at once
    gate.set()
    await session.wait_for(
        ConversationItemAdded,
        lambda e: isinstance(e.item, Message) and e.item.role == "assistant",
        timeout=10,
    )
    await server.wait_until(
        lambda: len(server.of_type("response.create")) == 2 and server.current.active is None
    )
    outs = [it for it in session.conversation if isinstance(it, FunctionCallOutput)]
    assert sorted(o.output for o in outs) == ["order #1 placed: small", "order #2 placed: large"]
    # the follow-up came after both outputs reached the server
    kinds = server.received_types()
    last_output = max(
        i
        for i, (_, e) in enumerate(server.received)
        if e["type"] == "conversation.item.create" and e["item"]["type"] == "function_call_output"
    )
    second_create = [i for i, t in enumerate(kinds) if t == "response.create"][1]
    assert last_output < second_create
    await settled(server, session)
    await session.aclose()


async def test_a_tool_that_raises_still_answers(server: RealtimeTestServer) -> None:
    server.replies.extend(
        [
            Reply(text="", function_calls=(("refund", '{"order": 7}'),)),
            Reply(text="Sorry, refunds are down."),
        ]
    )
    session, _transport, _ = await start(server, turn_detection=None)
    await session.generate_reply()
    executed = await session.wait_for(ToolExecuted, timeout=10)
    assert executed.output.is_error and "payment system down" in executed.output.output
    await server.wait_until(lambda: len(server.of_type("response.create")) == 2)
    sent = [
        e["item"]
        for e in server.of_type("conversation.item.create")
        if e["item"]["type"] == "function_call_output"
    ]
    assert len(sent) == 1 and "payment system down" in sent[0]["output"]
    await session.aclose()


async def test_reply_requested_during_an_active_response(server: RealtimeTestServer) -> None:
    held = Reply(text="First answer.", hold_after_ms=100)
    server.replies.extend([held, Reply(text="Second answer.")])
    session, _transport, _ = await start(server, turn_detection=None)
    first = await session.generate_reply()
    await asyncio.wait_for(first.created, 5)
    second_task = asyncio.ensure_future(session.generate_reply(instructions="Add a joke."))
    await server.wait_until(lambda: server.current.responses[-1].audio_sent_ms >= 100)
    assert len(server.of_type("response.create")) == 1
    held.release.set()
    second = await asyncio.wait_for(second_task, 5)
    done = await asyncio.wait_for(second.done, 5)
    assert done.status == "completed"
    assert server.errors_sent["conversation_already_has_active_response"] == 0
    assert "Add a joke." in server.of_type("response.create")[1]["response"]["instructions"]
    await session.aclose()
