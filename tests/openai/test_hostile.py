"""Regressions for what a hostile or broken server sent (issue 12): the reader lives on."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from duplex.agents.backend import (
    BackendError,
    ItemAdded,
    Reconnected,
    ResponseDone,
    SpeechStarted,
)
from duplex.agents.conversation import Conversation

from .helpers import Collector, backend
from .server import RealtimeTestServer


async def _session(server: RealtimeTestServer):  # type: ignore[no-untyped-def]
    session = await backend(server, turn_detection=None).connect(
        instructions="x", tools=[], conversation=Conversation()
    )
    return session, Collector(session)


async def _still_answers(session) -> None:  # type: ignore[no-untyped-def]
    handle = await session.create_response()
    assert (await asyncio.wait_for(handle.done, 10)).status == "completed"


async def test_a_huge_number_does_not_kill_the_reader(server: RealtimeTestServer) -> None:
    session, col = await _session(server)
    huge = int("9" * 401)  # float() of it raised OverflowError and killed the reader
    for kind in ("speech_started", "speech_stopped"):
        field = "audio_start_ms" if kind == "speech_started" else "audio_end_ms"
        event = {"type": f"input_audio_buffer.{kind}", field: huge, "item_id": "item_x"}
        await server.send_raw(json.dumps(event))
    truncated = {"type": "conversation.item.truncated", "item_id": "i", "audio_end_ms": huge}
    await server.send_raw(json.dumps(truncated))
    started = await col.wait_for(SpeechStarted)
    assert started.audio_start_ms is None  # out of bounds: unknown, not a crash
    err = await col.wait_for(BackendError)  # the truncate cannot be applied: reported
    assert err.code == "malformed_event" and "truncated" in err.message
    await _still_answers(session)
    await session.aclose()
    await col.aclose()


async def test_deeply_nested_json_is_one_error_not_a_reconnect(
    server: RealtimeTestServer,
) -> None:
    session, col = await _session(server)
    await server.send_raw('{"type": "x", "a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    err = await col.wait_for(BackendError)
    assert err.code == "malformed_event" and err.recoverable
    await _still_answers(session)
    assert session.reconnects == 0 and len(server.connections) == 1
    await session.aclose()
    await col.aclose()


async def test_a_done_with_a_bad_shape_still_ends_the_reply(server: RealtimeTestServer) -> None:
    """One response.created without a usable done must not block later replies."""
    session, col = await _session(server)
    await server.send_raw(json.dumps({"type": "response.created", "response": {"id": "r_x"}}))
    bad_done = {"id": "r_x", "status": 7, "status_details": "weird", "usage": "lots"}
    await server.send_raw(json.dumps({"type": "response.done", "response": bad_done}))
    done = await col.wait_for(ResponseDone)
    assert (done.response_id, done.status) == ("r_x", "failed")  # ended, not left active
    await _still_answers(session)
    await session.aclose()
    await col.aclose()


async def test_twenty_thousand_unknown_types_log_a_few_lines(
    server: RealtimeTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="duplex.backends.openai")
    session, col = await _session(server)
    for i in range(20_000):
        await server.send_raw(json.dumps({"type": f"vendor.extension_{i}"}))
    await _still_answers(session)  # read in order: all 20,000 were seen before the reply
    assert len(caplog.records) < 100
    assert not col.of(BackendError)  # unknown types are forward compatibility, not errors
    await session.aclose()
    await col.aclose()


async def test_twenty_thousand_server_items(server: RealtimeTestServer) -> None:
    """The mirror indexes items by id: 20,000 server-made items took 60 s when it scanned.

    Events are counted straight off the session (a `Conversation` of the core does its
    own, linear, bookkeeping: not what this measures)."""
    session = await backend(server, turn_detection=None).connect(
        instructions="x", tools=[], conversation=Conversation()
    )
    n = 20_000
    previous = None
    for i in range(n):
        item = {
            "id": f"item_{i:06d}",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_text", "text": f"line {i}"}],
        }
        event = {"type": "conversation.item.added", "item": item, "previous_item_id": previous}
        await server.send_raw(json.dumps(event))
        previous = item["id"]

    async def count() -> str:
        seen = 0
        async for ev in session.events():
            if isinstance(ev, ItemAdded):
                seen += 1
                if seen == n:
                    return ev.item.id
        return ""

    last = await asyncio.wait_for(count(), 120)
    assert last == f"item_{n - 1:06d}"
    assert [it.id for it in session.remote_items[-2:]] == [f"item_{n - 2:06d}", last]
    await session.aclose()


async def test_a_server_item_id_a_replay_could_not_send_is_refused(
    server: RealtimeTestServer,
) -> None:
    """Found by the fuzz suite: such an item made the next reconnect's replay fatal."""
    session, col = await _session(server)
    item = {"id": "x" * 40, "type": "message", "role": "user", "content": []}
    await server.send_raw(json.dumps({"type": "conversation.item.added", "item": item}))
    err = await col.wait_for(BackendError)
    assert err.code == "malformed_event"
    await server.current.close()  # a reconnect replays the mirror: it must not fail
    await col.wait_for(Reconnected, timeout=20)
    await _still_answers(session)
    await session.aclose()
    await col.aclose()
