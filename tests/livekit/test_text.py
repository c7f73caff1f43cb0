"""Transcripts and agent state as LiveKit clients read them; chat typed into the room."""

from __future__ import annotations

import asyncio

from duplex.agents.events import AgentStateChanged, AgentTranscribed, UserTranscribed
from duplex.plugins.livekit import (
    ATTR_AGENT_STATE,
    ATTR_FINAL,
    ATTR_SEGMENT_ID,
    ATTR_TRACK_ID,
    TOPIC_TRANSCRIPTION,
)

from .sim import SimulatedRoom


async def test_agent_words_stream_into_one_final_segment(
    room: SimulatedRoom, make_transport
) -> None:
    t = await make_transport()
    t.publish(AgentTranscribed("item_1", "Hel", False))
    t.publish(AgentTranscribed("item_1", "Hello wor", False))
    t.publish(AgentTranscribed("item_1", "Hello world.", True))
    await t.flush_text()
    [seg] = room.local.transcriptions()
    assert seg.topic == TOPIC_TRANSCRIPTION
    assert seg.chunks == ["Hel", "lo wor", "ld."]  # only what is new each time
    assert seg.closed
    assert seg.attributes[ATTR_SEGMENT_ID] == "item_1"
    assert seg.attributes[ATTR_TRACK_ID] == t.agent_track_sid
    assert seg.attributes[ATTR_FINAL] == "false"
    assert seg.final_attributes[ATTR_FINAL] == "true"
    assert seg.sender_identity == "agent"


async def test_interrupted_reply_is_replaced_by_what_was_heard(
    room: SimulatedRoom, make_transport
) -> None:
    t = await make_transport()
    t.publish(AgentTranscribed("item_2", "one two three four", False))
    t.publish(AgentTranscribed("item_2", "one two", True))  # truncated to the audio played
    await t.flush_text()
    streamed, final = room.local.transcriptions()
    assert streamed.text == "one two three four" and streamed.closed
    assert streamed.final_attributes[ATTR_FINAL] == "false"  # never marked final
    assert final.text == "one two" and final.closed
    assert final.attributes[ATTR_SEGMENT_ID] == "item_2"  # same segment: clients replace it
    assert final.attributes[ATTR_FINAL] == "true"


async def test_caller_words_are_attributed_to_the_caller(
    room: SimulatedRoom, make_transport
) -> None:
    t = await make_transport()
    await room.join("alice")
    mic = await room.publish_mic("alice")
    t.publish(UserTranscribed("user_1", "book a", False))
    t.publish(UserTranscribed("user_1", "book a table", True))
    await t.flush_text()
    interim, final = room.local.transcriptions()
    for seg in (interim, final):
        assert seg.sender_identity == "alice"
        assert seg.attributes[ATTR_SEGMENT_ID] == "user_1"
        assert seg.attributes[ATTR_TRACK_ID] == mic.sid
        assert seg.closed
    assert (interim.text, interim.attributes[ATTR_FINAL]) == ("book a", "false")
    assert (final.text, final.attributes[ATTR_FINAL]) == ("book a table", "true")


async def test_agent_state_attribute_survives_a_reconnect(
    room: SimulatedRoom, make_transport
) -> None:
    t = await make_transport()
    for old, new in [
        ("initializing", "listening"),
        ("listening", "thinking"),
        ("thinking", "speaking"),
        ("speaking", "closed"),
    ]:
        t.publish(AgentStateChanged(old, new))  # type: ignore[arg-type]
    await t.flush_text()
    assert [u[ATTR_AGENT_STATE] for u in room.local.attribute_updates] == [
        "listening",
        "thinking",
        "speaking",
    ]  # "closed" is not a LiveKit state: leaving the room says it
    room.local.changed.clear()
    await room.reconnect()
    await asyncio.wait_for(room.local.changed.wait(), 2)
    assert room.local.attribute_updates[-1] == {ATTR_AGENT_STATE: "speaking"}
    assert room.local.attributes[ATTR_AGENT_STATE] == "speaking"
    assert t.reconnects == 1 and not t.reconnecting and not t.closed.is_set()


async def test_chat_from_the_followed_participant_becomes_input(
    room: SimulatedRoom, make_transport
) -> None:
    t = await make_transport()
    got: asyncio.Queue[str] = asyncio.Queue()
    t.set_text_handler(got.put)
    await room.join("alice")
    await room.join("bob")
    await room.chat("bob", "ignore me")  # not the participant the agent talks with
    await room.chat("alice", "  what time is it?  ")
    assert await asyncio.wait_for(got.get(), 2) == "what time is it?"
    assert got.empty()
