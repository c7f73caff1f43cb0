"""Barge-in: server-side cancellation honoured, truncation clamped to real audio."""

from __future__ import annotations

import asyncio

import pytest

from duplex.agents.backend import (
    AudioDelta,
    ItemDeleted,
    ItemUpdated,
    ResponseDone,
    SpeechStarted,
)
from duplex.agents.conversation import AudioPart, Conversation, Message
from duplex.agents.errors import BackendErrorException
from duplex.backends.openai import ServerVAD

from .helpers import Collector, backend, say, utterance
from .server import RealtimeTestServer, Reply


async def reply_in_progress(server: RealtimeTestServer, **options: object):  # type: ignore[no-untyped-def]
    """A session whose first reply is streaming and held after 300 ms of audio."""
    held = Reply(
        text="Let me tell you a rather long story about Paris.", audio_ms=2000, hold_after_ms=300
    )
    server.replies.append(held)
    session = await backend(server, **options).connect(
        instructions="x", tools=[], conversation=Conversation()
    )
    col = Collector(session)
    handle = await session.create_response()
    await col.wait_for(AudioDelta)
    await server.wait_until(lambda: server.current.responses[-1].audio_sent_ms >= 300)
    return session, col, handle, held


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_server_vad_barge_in_cancels_on_the_server_only(
    server: RealtimeTestServer, dialect: str
) -> None:
    session, col, handle, _ = await reply_in_progress(server, dialect=dialect)
    assert server.current.dialect == dialect
    assert session_caps(server).server_interrupts
    await say(session, utterance("stop please"))
    await col.wait_for(SpeechStarted)
    await session.cancel_response()  # what a session does on barge-in: a no-op here
    done = await asyncio.wait_for(handle.done, 5)
    assert done.status == "cancelled" and done.reason == "turn_detected"
    assert server.of_type("response.cancel") == []
    assert server.errors_sent["response_cancel_not_active"] == 0
    # no audio of the cancelled reply reaches the session after the caller spoke
    first_speech = col.events.index(col.of(SpeechStarted)[0])
    late = [e for e in col.events[first_speech:] if isinstance(e, AudioDelta)]
    assert not [e for e in late if e.response_id == done.response_id]

    reply = next(
        it for it in col.conversation if isinstance(it, Message) and it.role == "assistant"
    )
    await session.truncate(reply.id, 250)
    updated = await col.wait_for(
        ItemUpdated, lambda e: e.item.id == reply.id and e.item.truncated_ms is not None
    )
    assert isinstance(updated.item, Message) and updated.item.truncated_ms == 250
    part = updated.item.content[0]
    assert isinstance(part, AudioPart) and part.duration_ms == 250
    full = "Let me tell you a rather long story about Paris."
    assert full.startswith(part.transcript) and len(part.transcript) < len(full)
    truncate = server.of_type("conversation.item.truncate")[0]
    assert (truncate["content_index"], truncate["audio_end_ms"]) == (0, 250)
    assert server.current.item_audio_ms[reply.id] == 250
    assert sum(server.errors_sent.values()) == 0
    await session.aclose()
    await col.aclose()


def session_caps(server: RealtimeTestServer):  # type: ignore[no-untyped-def]
    return backend(server).capabilities


async def test_truncate_is_clamped_to_the_audio_received(server: RealtimeTestServer) -> None:
    session, col, handle, held = await reply_in_progress(server, turn_detection=None)
    held.release.set()
    await asyncio.wait_for(handle.done, 5)
    await col.wait_for(ResponseDone)
    reply = col.conversation.items[-1]
    assert isinstance(reply, Message) and reply.audio_ms == 2000
    await session.truncate(reply.id, 99_999)  # the caller "heard" more than exists
    assert server.of_type("conversation.item.truncate")[0]["audio_end_ms"] == 2000
    assert sum(server.errors_sent.values()) == 0
    await session.aclose()
    await col.aclose()


async def test_truncate_mid_stream_uses_what_arrived(server: RealtimeTestServer) -> None:
    session, col, handle, _ = await reply_in_progress(server, turn_detection=None)
    await session.cancel_response()
    await asyncio.wait_for(handle.done, 5)
    await col.wait_for(ResponseDone)
    reply = col.conversation.items[-1]
    assert isinstance(reply, Message)
    received = sum(a.frame.duration_ms for a in col.of(AudioDelta) if a.item_id == reply.id)
    await session.truncate(reply.id, 1500)
    sent = server.of_type("conversation.item.truncate")[0]["audio_end_ms"]
    assert sent <= received < 1500 and sent == int(received)
    assert sum(server.errors_sent.values()) == 0
    await session.aclose()
    await col.aclose()


async def test_truncate_to_zero_deletes_the_item(server: RealtimeTestServer) -> None:
    session, col, handle, _ = await reply_in_progress(server, turn_detection=None)
    await session.cancel_response()
    await asyncio.wait_for(handle.done, 5)
    await col.wait_for(ResponseDone)
    reply = col.conversation.items[-1]
    await session.truncate(reply.id, 0)
    await col.wait_for(ItemDeleted, lambda e: e.item_id == reply.id)
    assert reply.id not in col.conversation and reply.id not in [
        it["id"] for it in server.current.items
    ]
    assert server.of_type("conversation.item.truncate") == []
    assert sum(server.errors_sent.values()) == 0
    await session.aclose()
    await col.aclose()


async def test_truncate_refuses_non_assistant_items(server: RealtimeTestServer) -> None:
    conv = Conversation()
    user = conv.add_message("user", "hello")
    session = await backend(server).connect(instructions="x", tools=[], conversation=conv)
    with pytest.raises(BackendErrorException) as e:
        await session.truncate(user.id, 100)
    assert e.value.code == "item_truncate_invalid_item_id"
    with pytest.raises(BackendErrorException):
        await session.truncate("item_unknown", 100)
    assert server.of_type("conversation.item.truncate") == []
    await session.aclose()


async def test_interrupt_response_false_is_honoured(server: RealtimeTestServer) -> None:
    td = ServerVAD(interrupt_response=False)
    assert not backend(server, turn_detection=td).capabilities.server_interrupts
    session, col, handle, held = await reply_in_progress(server, turn_detection=td)
    sent = server.of_type("session.update")[0]["session"]["audio"]["input"]["turn_detection"]
    assert sent["interrupt_response"] is False
    await say(session, utterance("just saying"))
    await col.wait_for(SpeechStarted)
    held.release.set()
    done = await asyncio.wait_for(handle.done, 5)
    assert done.status == "completed"  # the caller talking did not cut the reply
    assert (
        sum(a.frame.duration_ms for a in col.of(AudioDelta) if a.response_id == done.response_id)
        == 2000
    )
    await session.aclose()
    await col.aclose()
