"""Phone callers: keypad digits to the agent, hang-up and transfer through the server API.

The server API is a real aiohttp server speaking Twirp (protobuf bodies, JSON
errors) on 127.0.0.1; every request's token is checked with api.TokenVerifier.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from livekit import api, rtc
from livekit.protocol import room as room_proto
from livekit.protocol import sip as sip_proto

from duplex.agents.errors import ConfigurationError, ToolError
from duplex.plugins.livekit import DtmfDigit, LiveKitCredentials, sip_tools

from .sim import API_KEY, API_SECRET, SimulatedRoom

SIP = rtc.ParticipantKind.PARTICIPANT_KIND_SIP
CALLER = "sip_+15551234567"


@dataclass
class TwirpServer:
    url: str
    requests: list[tuple[str, Any, api.access_token.Claims]] = field(default_factory=list)
    fail_with: tuple[int, str, str] | None = None


@pytest.fixture
async def twirp() -> AsyncIterator[TwirpServer]:
    verifier = api.TokenVerifier(API_KEY, API_SECRET)
    bodies = {
        "/twirp/livekit.RoomService/RemoveParticipant": (
            room_proto.RoomParticipantIdentity,
            room_proto.RemoveParticipantResponse,
        ),
        "/twirp/livekit.SIP/TransferSIPParticipant": (
            sip_proto.TransferSIPParticipantRequest,
            sip_proto.TransferSIPParticipantResponse,
        ),
    }
    server = TwirpServer(url="")

    async def handle(request: web.Request) -> web.Response:
        if request.path not in bodies:
            return web.json_response({"code": "bad_route", "msg": "no such method"}, status=404)
        auth = request.headers.get("Authorization", "")
        try:
            claims = verifier.verify(auth.removeprefix("Bearer "))
        except Exception as e:
            return web.json_response({"code": "unauthenticated", "msg": str(e)}, status=401)
        if request.content_type != "application/protobuf":
            return web.json_response({"code": "malformed", "msg": "protobuf only"}, status=400)
        req_cls, resp_cls = bodies[request.path]
        server.requests.append((request.path, req_cls.FromString(await request.read()), claims))
        if server.fail_with is not None:
            status, code, msg = server.fail_with
            return web.json_response({"code": code, "msg": msg}, status=status)
        return web.Response(
            body=resp_cls().SerializeToString(), content_type="application/protobuf"
        )

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"ws://127.0.0.1:{port}"
    yield server
    await runner.cleanup()


async def _phone_call(room: SimulatedRoom, make_transport, twirp: TwirpServer | None = None):
    creds = LiveKitCredentials(twirp.url if twirp else "ws://127.0.0.1:9", API_KEY, API_SECRET)
    t = await make_transport(credentials=creds)
    await room.join(CALLER, kind=SIP, attributes={"sip.phoneNumber": "+15551234567"})
    return t


async def test_keypad_digits_reach_callbacks_and_the_buffer(
    room: SimulatedRoom, make_transport
) -> None:
    t = await _phone_call(room, make_transport)
    await room.join("sip_other", kind=SIP)
    pressed: list[DtmfDigit] = []
    t.on_dtmf(pressed.append)
    reading = asyncio.ensure_future(t.dtmf.read(max_digits=8, timeout_s=5))
    for digit in "12*":
        await room.press(CALLER, digit)
    await room.press("sip_other", "9")  # a caller the agent is not talking with
    await room.press(CALLER, "#")
    assert await asyncio.wait_for(reading, 2) == "12*"
    assert [d.digit for d in pressed] == ["1", "2", "*", "#"]
    assert [d.code for d in pressed] == [1, 2, 10, 11]
    assert {d.participant_identity for d in pressed} == {CALLER}


async def test_keypad_entry_ends_on_a_pause_or_length(room: SimulatedRoom, make_transport) -> None:
    t = await _phone_call(room, make_transport)
    for digit in "98765":
        await room.press(CALLER, digit)
    assert await t.dtmf.read(max_digits=4, timeout_s=5) == "9876"
    assert await t.dtmf.read(max_digits=4, timeout_s=0.05) == "5"  # the pause ends it
    assert await t.dtmf.read(max_digits=4, timeout_s=0.05) == ""


async def test_read_keypad_tool(room: SimulatedRoom, make_transport) -> None:
    t = await _phone_call(room, make_transport)
    tools = {tool.name: tool for tool in sip_tools(t)}
    assert set(tools) == {"end_call", "transfer_call", "read_keypad"}
    read = tools["read_keypad"]
    args = read.validate('{"max_digits": 4}')
    result = asyncio.ensure_future(read.invoke(args))
    for digit in "4321":
        await room.press(CALLER, digit)
    assert await asyncio.wait_for(result, 2) == "4321"


async def test_end_call_removes_the_phone_participant(
    room: SimulatedRoom, make_transport, twirp: TwirpServer
) -> None:
    t = await _phone_call(room, make_transport, twirp)
    end_call = {tool.name: tool for tool in sip_tools(t)}["end_call"]
    assert await end_call.invoke(end_call.validate({})) == "call ended"
    [(path, req, claims)] = twirp.requests
    assert path.endswith("/RemoveParticipant")
    assert (req.room, req.identity) == ("test-room", CALLER)
    assert claims.video is not None and claims.video.room_admin
    assert claims.video.room == "test-room"


async def test_transfer_sends_a_refer_for_the_caller(
    room: SimulatedRoom, make_transport, twirp: TwirpServer
) -> None:
    t = await _phone_call(room, make_transport, twirp)
    transfer = {tool.name: tool for tool in sip_tools(t)}["transfer_call"]
    assert "destination" in transfer.parameters["properties"]
    out = await transfer.invoke(transfer.validate({"destination": "+15550001111"}))
    assert out == "transferred to +15550001111"
    [(path, req, claims)] = twirp.requests
    assert path.endswith("/TransferSIPParticipant")
    assert req.room_name == "test-room"
    assert req.participant_identity == CALLER
    assert req.transfer_to == "tel:+15550001111"
    assert claims.sip is not None and claims.sip.call


async def test_a_refused_transfer_is_an_error_the_model_can_read(
    room: SimulatedRoom, make_transport, twirp: TwirpServer
) -> None:
    t = await _phone_call(room, make_transport, twirp)
    twirp.fail_with = (412, "failed_precondition", "transfer not enabled on trunk")
    with pytest.raises(Exception, match="transfer not enabled"):
        await t.transfer(CALLER, "tel:+15550001111")
    restricted = {tool.name: tool for tool in sip_tools(t, allow_transfer_to=("+15550002222",))}[
        "transfer_call"
    ]
    with pytest.raises(ToolError, match="only allowed"):
        await restricted.invoke({"destination": "+15550001111"})
    assert len(twirp.requests) == 1  # the refused destination never reached the server


async def test_phone_tools_refuse_when_the_caller_is_not_on_a_phone(
    room: SimulatedRoom, make_transport
) -> None:
    t = await make_transport()
    await room.join("alice")
    end_call = {tool.name: tool for tool in sip_tools(t)}["end_call"]
    with pytest.raises(ToolError, match="not on a phone"):
        await end_call.invoke({})


async def test_call_control_needs_api_credentials(room: SimulatedRoom, make_transport) -> None:
    from duplex.plugins.livekit import SipControls

    with pytest.raises(ConfigurationError, match="LIVEKIT_API_KEY"):
        await SipControls(None).hang_up("test-room", CALLER)
