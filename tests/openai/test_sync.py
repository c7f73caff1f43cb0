"""Conversation sync: minimal acknowledged ops, errors that fail at once, nothing lost."""

from __future__ import annotations

import asyncio
import time

import pytest

from duplex.agents.backend import BackendEvent, ItemAdded, ItemUpdated, ResponseDone
from duplex.agents.conversation import (
    Conversation,
    FunctionCall,
    FunctionCallOutput,
    Message,
    TextPart,
    diff,
)
from duplex.agents.errors import BackendErrorException

from .helpers import Collector, backend, ids
from .server import RealtimeTestServer


def history() -> Conversation:
    conv = Conversation()
    conv.add_message("system", "The caller is called Ada.")
    conv.add_message("user", "Book a table for two.")
    conv.append(FunctionCall("call_1", "book_table", '{"people": 2}'))
    conv.append(FunctionCallOutput("call_1", "booked at 8pm", name="book_table"))
    conv.add_message("assistant", "Done, 8pm.")
    return conv


async def test_initial_conversation_is_replayed_in_order(server: RealtimeTestServer) -> None:
    conv = history()
    session = await backend(server).connect(instructions="x", tools=[], conversation=conv)
    assert ids(server.current.items) == ids(conv)
    creates = server.of_type("conversation.item.create")
    assert creates[0]["previous_item_id"] == "root"
    assert [c["previous_item_id"] for c in creates[1:]] == ids(conv)[:-1]
    wire = {it["id"]: it for it in server.current.items}
    call = wire[conv.items[2].id]
    assert (call["type"], call["call_id"], call["name"]) == (
        "function_call",
        "call_1",
        "book_table",
    )
    assert wire[conv.items[4].id]["content"] == [{"type": "output_text", "text": "Done, 8pm."}]
    assert all(a is b for a, b in zip(session.remote_items, conv, strict=True))
    await session.aclose()


async def test_sync_sends_only_the_difference(server: RealtimeTestServer) -> None:
    conv = history()
    session = await backend(server).connect(instructions="x", tools=[], conversation=conv)
    col = Collector(session, conv)
    n_before = len(server.received)
    await session.sync(conv)  # nothing changed: nothing sent
    assert len(server.received) == n_before

    removed = conv.items[1]
    conv.remove(removed.id)
    edited = Message.text_message("assistant", "Done, 8:30pm.", id=conv.items[-1].id)
    conv.replace(edited)
    added = conv.add_message("user", "Thanks!")
    await session.sync(conv)
    sent = [e for _, e in server.received[n_before:]]
    kinds = [(e["type"], e.get("item_id") or e["item"]["id"]) for e in sent]
    assert kinds == [
        ("conversation.item.delete", removed.id),
        ("conversation.item.delete", edited.id),
        ("conversation.item.create", edited.id),
        ("conversation.item.create", added.id),
    ]
    assert sent[2]["previous_item_id"] == conv.items[-3].id
    assert sent[3]["previous_item_id"] == edited.id
    assert ids(server.current.items) == ids(conv)
    assert diff(session.remote_items, conv.items) == []
    assert all(isinstance(e.get("event_id"), str) for e in sent)
    await session.aclose()
    await col.aclose()


async def test_create_error_fails_sync_at_once_and_nothing_is_lost(
    server: RealtimeTestServer,
) -> None:
    conv = history()
    session = await backend(server, request_timeout=30).connect(
        instructions="x", tools=[], conversation=conv
    )
    out = conv.append(FunctionCallOutput("call_9", "late result"))
    server.fail_next["conversation.item.create"] = ("server_error", "The server had an error")
    t0 = time.monotonic()
    with pytest.raises(BackendErrorException) as e:
        await session.sync(conv)
    assert e.value.code == "server_error"
    assert time.monotonic() - t0 < 2.0  # failed by the error naming the event, not a timeout
    assert out.id not in ids(session.remote_items)
    await session.sync(conv)  # the next sync sends it again, once
    assert ids(server.current.items) == ids(conv)
    assert [c["item"]["id"] for c in server.of_type("conversation.item.create")].count(out.id) == 2
    await session.aclose()


async def test_delete_error_keeps_the_mirror(server: RealtimeTestServer) -> None:
    conv = history()
    session = await backend(server).connect(instructions="x", tools=[], conversation=conv)
    victim = conv.items[0]
    conv.remove(victim.id)
    server.fail_next["conversation.item.delete"] = ("item_delete_invalid_item_id", "not found")
    with pytest.raises(BackendErrorException) as e:
        await session.sync(conv)
    assert e.value.code == "item_delete_invalid_item_id"
    assert victim.id in ids(session.remote_items)  # still believed on the server
    await session.sync(conv)
    assert ids(server.current.items) == ids(conv)
    await session.aclose()


async def test_previous_item_not_found_is_reported_with_the_server_code(
    server: RealtimeTestServer,
) -> None:
    conv = history()
    session = await backend(server).connect(instructions="x", tools=[], conversation=conv)
    # The server dropped an item without telling us (as its context truncation does):
    # the create that names it as previous_item_id fails, with the server's code.
    server.current.items.pop()
    conv.add_message("user", "And dessert?")
    with pytest.raises(BackendErrorException) as e:
        await session.sync(conv)
    assert e.value.code == "previous_item_not_found"
    await session.aclose()


async def test_empty_messages_stay_local(server: RealtimeTestServer) -> None:
    conv = history()
    session = await backend(server).connect(instructions="x", tools=[], conversation=conv)
    empty = conv.append(Message(role="assistant", content=(TextPart(""),)))
    after = conv.add_message("user", "hello?")
    await session.sync(conv)
    created = [c["item"]["id"] for c in server.of_type("conversation.item.create")]
    assert empty.id not in created and after.id in created
    after_create = server.of_type("conversation.item.create")[-1]
    assert after_create["previous_item_id"] == conv.items[-3].id  # skips the local-only item
    assert diff(session.remote_items, conv.items) == []
    n = len(server.received)
    await session.sync(conv)
    assert len(server.received) == n  # and it is not retried every sync
    await session.aclose()


async def test_too_long_ids_are_refused_before_sending(server: RealtimeTestServer) -> None:
    conv = Conversation()
    session = await backend(server).connect(instructions="x", tools=[], conversation=conv)
    conv.append(Message.text_message("user", "hi", id="x" * 40))
    n = len(server.received)
    with pytest.raises(BackendErrorException) as e:
        await session.sync(conv)
    assert e.value.code == "invalid_item_id" and len(server.received) == n
    await session.aclose()


async def test_sync_never_undoes_what_the_session_has_not_seen(server: RealtimeTestServer) -> None:
    """A reply's items still queued for the session are neither deleted nor reordered."""
    conv = history()
    session = await backend(server, turn_detection=None).connect(
        instructions="x", tools=[], conversation=conv
    )
    handle = await session.create_response()  # nobody consumes events yet
    await asyncio.wait_for(handle.done, 5)
    reply_id = ids(server.current.items)[-1]
    assert reply_id not in conv
    n = len(server.received)
    late = conv.add_message("user", "and one more thing")
    await session.sync(conv)
    sent = [e for _, e in server.received[n:]]
    assert [e["type"] for e in sent] == ["conversation.item.create"]
    assert sent[0]["previous_item_id"] == reply_id  # after the reply, where it will land
    col = Collector(session, conv)  # now the session catches up
    await col.wait_for(ResponseDone)
    assert ids(conv) == ids(server.current.items) and ids(conv)[-2:] == [reply_id, late.id]
    assert diff(session.remote_items, conv.items) == []
    await session.aclose()
    await col.aclose()


async def test_an_item_the_session_removed_is_deleted_and_not_revived(
    server: RealtimeTestServer,
) -> None:
    conv = history()
    session = await backend(server, turn_detection=None).connect(
        instructions="x", tools=[], conversation=conv
    )
    col = Collector(session, conv)
    handle = await session.create_response()
    await asyncio.wait_for(handle.done, 5)
    await col.wait_for(ResponseDone)
    reply_id = ids(conv)[-1]
    conv.remove(reply_id)
    await session.sync(conv)
    assert reply_id not in ids(server.current.items) and reply_id not in conv
    assert diff(session.remote_items, conv.items) == []
    await session.aclose()
    await col.aclose()


async def test_a_queued_update_does_not_revive_a_removed_item(server: RealtimeTestServer) -> None:
    conv = history()
    session = await backend(server, turn_detection=None).connect(
        instructions="x", tools=[], conversation=conv
    )
    handle = await session.create_response()
    await asyncio.wait_for(handle.done, 5)
    events = session.events()
    added = None
    while added is None:  # the session sees the reply's ItemAdded, not yet its ItemUpdated
        ev = await asyncio.wait_for(anext(events), 5)
        if isinstance(ev, ItemAdded):
            added = ev
    conv.append(added.item)
    conv.remove(added.item.id)  # ... and drops it (as a barge-in with nothing heard does)
    await session.sync(conv)
    assert added.item.id not in ids(server.current.items)
    rest: list[BackendEvent] = []
    while not rest or not isinstance(rest[-1], ResponseDone):
        rest.append(await asyncio.wait_for(anext(events), 5))
    assert not [e for e in rest if isinstance(e, ItemUpdated) and e.item.id == added.item.id]
    await session.aclose()
