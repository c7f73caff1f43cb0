"""Faults: bad frames, dropped sockets, fatal errors, handshake failures, rollover."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from duplex.agents.backend import (
    AudioDelta,
    BackendError,
    Reconnected,
    ResponseDone,
)
from duplex.agents.conversation import (
    Conversation,
    FunctionCall,
    FunctionCallOutput,
    Message,
    diff,
)
from duplex.agents.errors import BackendErrorException
from duplex.backends.openai import ReconnectPolicy

from .helpers import Collector, backend, ids
from .server import RealtimeTestServer, Reply

FAST = ReconnectPolicy(max_attempts=4, initial_delay=0.01, max_delay=0.05)


def history() -> Conversation:
    conv = Conversation()
    conv.add_message("user", "Order me a pizza.")
    conv.append(FunctionCall("call_a", "order_pizza", '{"size": "large"}'))
    conv.append(FunctionCallOutput("call_a", "order #42 placed", name="order_pizza"))
    conv.add_message("assistant", "Your pizza is on its way.")
    return conv


async def test_malformed_and_unknown_events_are_skipped(
    server: RealtimeTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    session = await backend(server, turn_detection=None).connect(
        instructions="x", tools=[], conversation=Conversation()
    )
    col = Collector(session)
    caplog.set_level(logging.WARNING, logger="duplex.backends.openai")
    await server.send_raw("{not json")
    await server.send_raw(json.dumps({"type": "bogus.event", "event_id": "e1"}))
    await server.send_raw(json.dumps({"type": "bogus.event", "event_id": "e2"}))
    await server.send_raw(json.dumps({"type": "response.output_audio.delta", "event_id": "e3"}))
    await server.send_raw(json.dumps({"type": "response.created", "response": "nope"}))
    handle = await session.create_response()
    assert (await asyncio.wait_for(handle.done, 5)).status == "completed"
    text = caplog.text
    assert text.count("bogus.event") == 1  # once per type
    assert "malformed frame" in text and "malformed 'response.created'" in text
    # One error event per bad event (unknown types are forward compatibility, not errors).
    errors = col.of(BackendError)
    assert [e.code for e in errors] == ["malformed_event", "malformed_event"]
    assert all(e.recoverable for e in errors) and "response.created" in errors[1].message
    await session.aclose()
    await col.aclose()


async def test_drop_mid_response_reconnects_and_replays_everything(
    server: RealtimeTestServer,
) -> None:
    conv = history()
    session = await backend(server, turn_detection=None, reconnect=FAST).connect(
        instructions="Be helpful.", tools=[], conversation=conv
    )
    col = Collector(session, conv)
    server.replies.append(
        Reply(text="One two three four five six", audio_ms=600, close_after_chunks=2)
    )
    handle = await session.create_response()
    with pytest.raises(BackendErrorException) as e:
        await asyncio.wait_for(handle.done, 5)
    assert e.value.code == "connection_lost"
    await col.wait_for(Reconnected)
    failed = col.of(ResponseDone)[0]
    assert (failed.status, failed.error) == ("failed", "connection_lost")

    assert len(server.connections) == 2
    second = server.received_types(conn=1)
    assert second[0] == "session.update" and set(second[1:]) == {"conversation.item.create"}
    replayed = server.connections[1].items
    assert ids(replayed) == ids(col.conversation)  # the whole conversation, nothing twice
    assert [it["type"] for it in replayed] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
        "message",
    ]
    assert replayed[1]["call_id"] == "call_a" and replayed[2]["output"] == "order #42 placed"
    partial = col.conversation.items[-1]
    assert isinstance(partial, Message) and partial.complete
    assert partial.audio_ms == 200  # two chunks arrived before the drop
    assert replayed[-1]["content"] == [{"type": "output_text", "text": partial.text}]
    assert partial.text == "One two"  # the transcript that arrived with those chunks
    assert server.connections[1].session["instructions"] == "Be helpful."
    assert diff(session.remote_items, col.conversation.items) == []
    assert session.reconnects == 1

    n = len(server.received)
    await session.sync(col.conversation)
    assert len(server.received) == n  # nothing left to send: nothing duplicated
    again = await session.create_response()
    assert (await asyncio.wait_for(again.done, 5)).status == "completed"
    await session.aclose()
    await col.aclose()


async def test_tool_output_synced_during_an_outage_is_sent_once(server: RealtimeTestServer) -> None:
    conv = history()
    session = await backend(server, turn_detection=None, reconnect=FAST).connect(
        instructions="x", tools=[], conversation=conv
    )
    col = Collector(session, conv)
    server.refuse_connections.extend([503])  # the first redial fails too
    await server.current.close()  # the service drops the socket
    out = conv.append(FunctionCallOutput("call_b", "refund issued", name="refund"))
    await session.sync(conv)  # waits for the reconnect, then sends what is missing
    await col.wait_for(Reconnected)
    items = server.connections[-1].items
    assert ids(items) == ids(conv)
    creates = [
        e["item"]["id"] for n, e in server.received if e["type"] == "conversation.item.create"
    ]
    assert creates.count(out.id) == 1
    await session.aclose()
    await col.aclose()


async def test_fatal_error_stops_reconnecting(server: RealtimeTestServer) -> None:
    session = await backend(server, reconnect=FAST).connect(
        instructions="x", tools=[], conversation=Conversation()
    )
    col = Collector(session)
    conn = server.current
    await conn.error("insufficient_quota", "You exceeded your current quota")
    await conn.close()
    err = await col.wait_for(BackendError)
    assert err.code == "insufficient_quota" and not err.recoverable
    await asyncio.wait_for(col._task, 5)  # the event stream ends
    assert len(server.connections) == 1
    await session.aclose()


async def test_handshake_401_is_fatal_and_not_retried(server: RealtimeTestServer) -> None:
    server.api_key = "sk-other"
    with pytest.raises(BackendErrorException) as e:
        await backend(server, reconnect=FAST).connect(
            instructions="x", tools=[], conversation=Conversation()
        )
    assert e.value.code == "invalid_api_key" and not e.value.recoverable
    assert len(server.handshakes) == 1


async def test_transient_handshake_failures_are_retried(server: RealtimeTestServer) -> None:
    server.refuse_connections.extend([503, 502])
    session = await backend(server, reconnect=FAST).connect(
        instructions="x", tools=[], conversation=Conversation()
    )
    assert len(server.handshakes) == 3 and len(server.connections) == 1
    await session.aclose()


async def test_giving_up_reports_a_final_error(server: RealtimeTestServer) -> None:
    session = await backend(server, reconnect=FAST).connect(
        instructions="x", tools=[], conversation=Conversation()
    )
    col = Collector(session)
    server.refuse_connections.extend([503] * 10)
    await server.current.close()
    err = await col.wait_for(BackendError)
    assert err.code == "http_503" and not err.recoverable
    await asyncio.wait_for(col._task, 5)
    assert len(server.handshakes) == 1 + FAST.max_attempts
    await session.aclose()


async def test_rollover_waits_for_a_quiet_moment(server: RealtimeTestServer) -> None:
    conv = history()
    held = Reply(hold_after_ms=100)
    server.replies.append(held)
    session = await backend(server, turn_detection=None, max_session_duration=0.2).connect(
        instructions="x", tools=[], conversation=conv
    )
    col = Collector(session, conv)
    handle = await session.create_response()
    await col.wait_for(AudioDelta)
    await asyncio.wait_for(session.rollover_pending.wait(), 5)  # the limit has passed ...
    assert len(server.connections) == 1  # ... but a reply is streaming: no rollover yet
    held.release.set()
    await asyncio.wait_for(handle.done, 5)
    ev = await col.wait_for(Reconnected)
    assert ev.attempt == 0 and session.rollovers == 1 and session.reconnects == 0
    assert ids(server.connections[1].items) == ids(col.conversation)
    assert not col.of(BackendError)
    await session.aclose()
    await col.aclose()


async def test_a_refused_replay_is_final_not_a_reconnect_loop(server: RealtimeTestServer) -> None:
    session = await backend(server, reconnect=FAST).connect(
        instructions="x", tools=[], conversation=history()
    )
    col = Collector(session)
    server.fail_next["session.update"] = ("invalid_value", "Invalid value: 'marin'")
    await server.current.close()
    err = await col.wait_for(BackendError)
    assert err.code == "invalid_value" and not err.recoverable
    await asyncio.wait_for(col._task, 5)
    assert len(server.connections) == 2
    await session.aclose()
