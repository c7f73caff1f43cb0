"""duplex's own `OpenAIRealtime` + `AgentSession` + `MemoryTransport` against the server.

The foundation behaviour list that tests/openai/test_agent_session.py runs against the
project's OpenAI test server, here against a real cascade: full turn, barge-in
truncation, tool output once, concurrent tools, a reply asked for during another.
What the model remembers is read from the requests the chat model received.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from duplex.agents import Agent, AgentSession
from duplex.agents.conversation import FunctionCallOutput, Message
from duplex.agents.events import (
    AgentInterrupted,
    AgentStateChanged,
    ToolExecuted,
    UserTranscribed,
)
from duplex.agents.testing import MemoryTransport
from duplex.backends.openai import OpenAIRealtime
from tests.shop import Shop

from ..cascade.chat_server import Call, Gate, Text
from .conftest import API_KEY, Checked
from .helpers import hear, utterance, words


async def start(
    server: Checked, agent: Agent | None = None, *, playout: str = "auto", **options: Any
) -> tuple[AgentSession, MemoryTransport]:
    backend = OpenAIRealtime(
        base_url=server.url, api_key=API_KEY, env={}, reconnect=None, model="duplex", **options
    )
    session = AgentSession(agent=agent or Shop(), backend=backend)
    transport = MemoryTransport(input_rate=48000, output_rate=48000, playout=playout)  # type: ignore[arg-type]
    await session.start(transport)
    return session, transport


def sent(server: Checked, kind: str) -> list[dict[str, Any]]:
    return [e for e in server.sent if e["type"] == kind]


def tool_messages(server: Checked, request: int) -> list[dict[str, Any]]:
    assert server.chat is not None
    return [m for m in server.chat.requests[request].body["messages"] if m["role"] == "tool"]


async def test_full_spoken_turn(echo_server: Checked) -> None:
    session, transport = await start(echo_server)
    transport.push(utterance("what is the weather in paris", rate=48000))
    heard = await session.wait_for(UserTranscribed, lambda e: e.final, timeout=60)
    assert {"weather", "paris"} <= set(words(heard.text))
    await session.wait_for(AgentStateChanged, lambda e: e.old == "speaking", timeout=60)
    user, reply = session.conversation.items
    assert isinstance(user, Message) and isinstance(reply, Message) and reply.complete
    assert {"said", "weather", "paris"} <= set(words(reply.text))
    played = transport.output.audio()
    assert played is not None
    assert {"weather", "paris"} <= set(words(hear(played)))
    server_ms = sum(
        len(base64.b64decode(e["delta"])) / 48
        for e in sent(echo_server, "response.output_audio.delta")
    )
    assert abs(transport.output.played_ms - server_ms) <= 20  # everything sent was played
    assert not sent(echo_server, "error")
    await session.aclose()


async def test_barge_in_truncates_the_models_memory_to_what_was_heard(server: Checked) -> None:
    assert server.chat is not None
    server.chat.script(
        Text("Alpha is the first one. Bravo is the second. Charlie is the third one.")
    )
    server.chat.script(Text("Sure."))
    session, transport = await start(server, playout="manual")
    handle = await session.generate_reply()
    await asyncio.wait_for(handle.done, 60)
    # Play past the first sentence: its audio is what the server sent before "Bravo".
    first_ms = 0.0
    for e in server.sent:
        if e["type"] == "response.output_audio_transcript.delta" and "Bravo" in e["delta"]:
            break
        if e["type"] == "response.output_audio.delta":
            first_ms += len(base64.b64decode(e["delta"])) / 48
    await transport.output.play(first_ms + 200)
    transport.push(utterance("wait a moment", rate=48000))
    interrupted = await session.wait_for(AgentInterrupted, timeout=60)
    assert interrupted.played_ms >= first_ms
    truncated = await _wait(lambda: sent(server, "conversation.item.truncated"))
    assert truncated[0]["item_id"] == interrupted.item_id
    assert truncated[0]["audio_end_ms"] == int(interrupted.played_ms)
    await _wait(lambda: len(server.chat.requests) >= 2)  # the caller's turn got its reply
    memory = [m for m in server.chat.requests[1].body["messages"] if m["role"] == "assistant"]
    assert memory[0]["content"].startswith("Alpha is the first one.")
    assert "Charlie" not in memory[0]["content"]
    item = session.conversation.get(interrupted.item_id or "")
    assert isinstance(item, Message) and item.truncated_ms == truncated[0]["audio_end_ms"]
    assert not sent(server, "error")
    await session.aclose()


async def test_tool_output_survives_an_interruption_and_is_sent_once(server: Checked) -> None:
    assert server.chat is not None
    agent = Shop()
    agent.gate = asyncio.Event()
    server.chat.script(Call("order_pizza", '{"size": "large"}'))
    session, transport = await start(server, agent)
    await session.generate_reply()
    await asyncio.wait_for(agent.one_started.wait(), 60)
    transport.push(utterance("actually make it small", rate=48000))  # talks over the tool
    await session.wait_for(UserTranscribed, lambda e: e.final, timeout=60)
    agent.gate.set()
    done = await session.wait_for(ToolExecuted, timeout=60)
    assert done.output.output == "order #1 placed: large"
    call_id = done.output.call_id
    await _wait(
        lambda: [
            e
            for e in sent(server, "conversation.item.added")
            if e["item"]["type"] == "function_call_output"
        ]
    )
    outputs = [
        e
        for e in sent(server, "conversation.item.added")
        if e["item"]["type"] == "function_call_output"
    ]
    assert [o["item"]["call_id"] for o in outputs] == [call_id]
    # The model's memory holds the output once: the next reply is asked with it.
    handle = await session.generate_reply()
    await asyncio.wait_for(handle.done, 60)
    last = len(server.chat.requests) - 1
    assert [m["content"] for m in tool_messages(server, last)] == ["order #1 placed: large"]
    assert agent.orders == ["large"]
    await session.aclose()


async def test_concurrent_tools_then_one_follow_up(server: Checked) -> None:
    assert server.chat is not None
    agent = Shop()
    agent.gate = asyncio.Event()
    server.chat.script(
        Call("order_pizza", '{"size": "small"}'), Call("order_pizza", '{"size": "large"}')
    )
    server.chat.script(Text("Two pizzas ordered."))
    session, _ = await start(server, agent, turn_detection=None)
    await session.generate_reply()
    await asyncio.wait_for(agent.both_started.wait(), 60)  # both run at once
    agent.gate.set()
    await _wait(lambda: len(sent(server, "response.done")) == 2)
    outs = [it for it in session.conversation if isinstance(it, FunctionCallOutput)]
    assert sorted(o.output for o in outs) == ["order #1 placed: small", "order #2 placed: large"]
    assert len(server.chat.requests) == 2  # one follow-up, after both outputs
    assert sorted(m["content"] for m in tool_messages(server, 1)) == [
        "order #1 placed: small",
        "order #2 placed: large",
    ]
    await session.aclose()


async def test_reply_requested_during_an_active_response(server: Checked) -> None:
    assert server.chat is not None
    gate = asyncio.Event()
    server.chat.script(Text("First answer. "), Gate(gate), Text("Still first."))
    server.chat.script(Text("Second answer."))
    session, _ = await start(server, turn_detection=None)
    first = await session.generate_reply()
    await asyncio.wait_for(first.created, 60)
    second_task = asyncio.ensure_future(session.generate_reply(instructions="Add a joke."))
    await _wait(lambda: bool(sent(server, "response.output_audio.delta")))
    assert len(server.chat.requests) == 1  # the second waits for the first
    gate.set()
    second = await asyncio.wait_for(second_task, 60)
    done = await asyncio.wait_for(second.done, 60)
    assert done.status == "completed"
    system = server.chat.requests[1].body["messages"][0]
    assert system["role"] == "system" and system["content"].endswith("Add a joke.")
    codes = [e["error"].get("code") for e in sent(server, "error")]
    assert "conversation_already_has_active_response" not in codes
    await session.aclose()


async def _wait(check: Any, timeout: float = 60.0) -> Any:
    """Poll a condition on what the servers recorded (they expose no change event)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (result := check()):
        if loop.time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)
    return result
