"""Who the agent listens to: selection, switching when the caller leaves, closing."""

from __future__ import annotations

import asyncio

import pytest
from livekit import rtc

from duplex.agents.errors import ConfigurationError
from duplex.plugins.livekit import parse_kinds

from .conftest import hear, tone
from .sim import SimulatedRoom

SIP = rtc.ParticipantKind.PARTICIPANT_KIND_SIP
AGENT = rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
EGRESS = rtc.ParticipantKind.PARTICIPANT_KIND_EGRESS


async def test_joins_with_a_minted_agent_token(room: SimulatedRoom, make_transport) -> None:
    t = await make_transport(identity="concierge", name="Concierge")
    assert room.claims is not None  # verified with api.TokenVerifier against the secret
    assert room.claims.identity == "concierge"
    assert room.claims.name == "Concierge"
    assert room.claims.kind == "agent"
    assert room.claims.video is not None and room.claims.video.room == "test-room"
    assert room.claims.video.room_join and room.claims.video.can_publish
    # the agent's voice is published as a microphone track
    pub = room.local.track_publications[t.agent_track_sid]
    assert pub.source == rtc.TrackSource.SOURCE_MICROPHONE
    assert pub.track is t.audio_output.track


async def test_a_token_for_another_room_is_refused(make_transport) -> None:
    from duplex.plugins.livekit import RoomConnectError

    with pytest.raises(RoomConnectError, match="could not join"):
        await make_transport(room_name="some-other-room")


async def test_follows_the_first_person_and_switches_when_they_leave(
    room: SimulatedRoom, make_transport
) -> None:
    t = await make_transport(input_rate=16000)
    await room.join("recorder", kind=EGRESS)
    await room.join("other-bot", kind=AGENT)
    assert t.participant is None  # neither recorders nor other agents are callers
    await room.join("alice")
    await room.join("bob")
    assert t.participant is not None and t.participant.identity == "alice"
    alice_mic = await room.publish_mic("alice")
    bob_mic = await room.publish_mic("bob")
    frames = t.audio_input.frames()
    await bob_mic.say(tone(880, 300, 48000))
    await alice_mic.say(tone(440, 300, 48000))
    await asyncio.wait_for(hear(frames, 440), 5)

    await room.leave("alice")
    assert t.participant is not None and t.participant.identity == "bob"
    assert t.audio_input.track_sid == bob_mic.sid
    await bob_mic.say(tone(880, 300, 48000))
    await asyncio.wait_for(hear(frames, 880), 5)
    assert not t.closed.is_set()

    await room.leave("bob")
    await asyncio.wait_for(t.closed.wait(), 5)
    assert t.close_reason == "participant bob left"
    assert room.disconnect_calls == 1  # it left the room it joined


async def test_follows_only_the_named_identity(room: SimulatedRoom, make_transport) -> None:
    t = await make_transport(participant_identity="bob")
    changes: list[str | None] = []
    t.on_participant_changed(lambda p: changes.append(p.identity if p else None))
    await room.join("alice")
    assert t.participant is None
    await room.join("bob")
    assert t.participant is not None and t.participant.identity == "bob"
    assert await asyncio.wait_for(t.wait_for_participant(), 1) is t.participant
    await room.leave("alice")  # not the followed one: nothing changes
    assert t.participant.identity == "bob" and not t.closed.is_set()
    assert changes == ["bob"]


async def test_phone_callers_only(room: SimulatedRoom, make_transport) -> None:
    t = await make_transport(participant_kinds="sip")
    await room.join("alice")
    assert t.participant is None and t.sip_call is None
    await room.join(
        "sip_+15551234567",
        kind=SIP,
        attributes={
            "sip.phoneNumber": "+15551234567",
            "sip.trunkPhoneNumber": "+15557654321",
            "sip.callID": "SCL_abc123",
            "sip.callStatus": "active",
            "sip.trunkID": "ST_trunk",
            "sip.ruleID": "SDR_rule",
            "sip.h.x-customer": "42",
            "lk.other": "not sip",
        },
    )
    call = t.sip_call
    assert call is not None
    assert call.identity == "sip_+15551234567"
    assert call.phone_number == "+15551234567"
    assert call.trunk_phone_number == "+15557654321"
    assert call.call_id == "SCL_abc123"
    assert call.call_status == "active"
    assert call.trunk_id == "ST_trunk" and call.rule_id == "SDR_rule"
    assert call.attributes["sip.h.x-customer"] == "42"
    assert "lk.other" not in call.attributes


async def test_stay_waits_for_the_next_caller(room: SimulatedRoom, make_transport) -> None:
    t = await make_transport(close_on_participant_leave=False)
    await room.join("alice")
    await room.leave("alice")
    assert t.participant is None and not t.closed.is_set()
    await room.join("carol")
    assert t.participant is not None and t.participant.identity == "carol"


def test_kind_names_are_checked() -> None:
    assert parse_kinds("standard, sip") == (
        rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD,
        SIP,
    )
    with pytest.raises(ConfigurationError, match="unknown participant kind 'phone'"):
        parse_kinds("phone")
    with pytest.raises(ConfigurationError):
        parse_kinds(" , ")


async def test_reconnect_keeps_the_call_and_picks_up_the_new_track(
    room: SimulatedRoom, make_transport
) -> None:
    t = await make_transport(input_rate=16000)
    await room.join("alice")
    await room.publish_mic("alice")
    frames = t.audio_input.frames()
    await room.reconnect()
    # after a full reconnect the SDK re-subscribes: the old track goes, a new one comes
    await room.unpublish_mic("alice")
    assert t.audio_input.track_sid is None
    mic = await room.publish_mic("alice")
    assert t.audio_input.track_sid == mic.sid
    await mic.say(tone(550, 300, 48000))
    await asyncio.wait_for(hear(frames, 550), 5)
    assert t.reconnects == 1 and not t.closed.is_set()
    assert t.participant is not None and t.participant.identity == "alice"


async def test_the_room_going_away_ends_the_call(room: SimulatedRoom, make_transport) -> None:
    t = await make_transport()
    await room.join("alice")
    await room.server_disconnect(rtc.DisconnectReason.ROOM_DELETED)
    await asyncio.wait_for(t.closed.wait(), 5)
    assert t.close_reason == "disconnected from the room (ROOM_DELETED)"
