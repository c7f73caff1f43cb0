"""Phone callers: who is calling, the keys they press, hanging up and transferring.

LiveKit's SIP service joins a phone call to a room as a participant of kind SIP
whose ``sip.*`` attributes describe the call; key presses arrive as SIP DTMF
packets. Hanging up is removing that participant; transferring is a SIP REFER
asked of the server API.

The key-press types and the tools are the core's (`duplex.agents.phone`), shared
with the other phone paths; this module adapts a room to them.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from duplex.agents.errors import ConfigurationError, ToolError
from duplex.agents.phone import (
    DtmfBuffer,
    DtmfCallback,
    DtmfDigit,
    PhoneTools,
    run_dtmf_callback,
)
from duplex.agents.tools import FunctionTool
from livekit import api, rtc

if TYPE_CHECKING:
    from .room import RoomTransport

__all__ = [
    "DtmfBuffer",
    "DtmfCallback",
    "DtmfDigit",
    "RoomPhoneLine",
    "SipCallInfo",
    "SipControls",
    "SipTools",
    "dtmf_from_event",
    "is_sip",
    "run_callback",
    "sip_tools",
]

SIP_PREFIX = "sip."


def is_sip(participant: rtc.Participant) -> bool:
    return participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP


@dataclass(frozen=True)
class SipCallInfo:
    """The phone side of a SIP participant, from its ``sip.*`` attributes."""

    identity: str
    phone_number: str | None = None  # the caller's number (sip.phoneNumber)
    trunk_phone_number: str | None = None  # the number that was called (sip.trunkPhoneNumber)
    call_id: str | None = None  # LiveKit's call id (sip.callID)
    call_status: str | None = None  # dialing, ringing, active, hangup (sip.callStatus)
    trunk_id: str | None = None
    rule_id: str | None = None
    #: Every ``sip.*`` attribute as sent, including ones not named above.
    attributes: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_participant(cls, participant: rtc.Participant) -> SipCallInfo | None:
        if not is_sip(participant):
            return None
        attrs = {k: v for k, v in participant.attributes.items() if k.startswith(SIP_PREFIX)}
        return cls(
            identity=participant.identity,
            phone_number=attrs.get("sip.phoneNumber"),
            trunk_phone_number=attrs.get("sip.trunkPhoneNumber"),
            call_id=attrs.get("sip.callID"),
            call_status=attrs.get("sip.callStatus"),
            trunk_id=attrs.get("sip.trunkID"),
            rule_id=attrs.get("sip.ruleID"),
            attributes=attrs,
        )


class SipControls:
    """Server-side call control; needs API credentials (LIVEKIT_API_KEY/SECRET)."""

    def __init__(self, api_factory: Callable[[], api.LiveKitAPI] | None) -> None:
        self._api_factory = api_factory

    async def _call(self, fn: Callable[[api.LiveKitAPI], Awaitable[object]]) -> object:
        if self._api_factory is None:
            raise ConfigurationError(
                "hanging up and transferring need LIVEKIT_API_KEY and LIVEKIT_API_SECRET"
            )
        client = self._api_factory()
        try:
            return await fn(client)
        finally:
            await client.aclose()  # type: ignore[no-untyped-call, unused-ignore]

    async def hang_up(self, room: str, identity: str) -> None:
        """Remove the participant: for a phone caller LiveKit ends the call (SIP BYE)."""
        await self._call(
            lambda c: c.room.remove_participant(
                api.RoomParticipantIdentity(room=room, identity=identity)
            )
        )

    async def transfer(
        self, room: str, identity: str, transfer_to: str, *, play_dialtone: bool = False
    ) -> None:
        """Cold transfer (SIP REFER) to ``tel:+1555...`` or ``sip:user@host``."""
        if not transfer_to:
            raise ConfigurationError("a transfer needs a destination number or SIP URI")
        await self._call(
            lambda c: c.sip.transfer_sip_participant(
                api.TransferSIPParticipantRequest(
                    room_name=room,
                    participant_identity=identity,
                    transfer_to=transfer_to,
                    play_dialtone=play_dialtone,
                )
            )
        )


class RoomPhoneLine:
    """The `PhoneLine` of a room: the followed participant, when it is a phone caller."""

    def __init__(self, transport: RoomTransport) -> None:
        self._t = transport

    @property
    def dtmf(self) -> DtmfBuffer:
        return self._t.dtmf

    def _caller(self) -> str:
        info = self._t.sip_call
        if info is None:
            raise ToolError("the caller is not on a phone line")
        return info.identity

    async def wait_for_playout(self) -> None:
        self._caller()
        await self._t.wait_for_playout()

    async def end_call(self) -> None:
        await self._t.hang_up(self._caller())

    async def transfer_call(self, target: str) -> None:
        await self._t.transfer(self._caller(), target)


class SipTools(PhoneTools):
    """Tools that let the model act on the phone call the transport follows."""

    def __init__(self, transport: RoomTransport, *, allow_transfer_to: tuple[str, ...] = ()):
        super().__init__(RoomPhoneLine(transport), allow_transfer_to=allow_transfer_to)


def sip_tools(transport: RoomTransport, **options: tuple[str, ...]) -> list[FunctionTool]:
    """``Agent(tools=sip_tools(ctx.transport))``: end_call, transfer_call, read_keypad."""
    return SipTools(transport, **options).tools()


def dtmf_from_event(event: rtc.SipDTMF) -> DtmfDigit:
    return DtmfDigit(
        digit=event.digit,
        code=event.code,
        participant_identity=event.participant.identity if event.participant else None,
        at=time.monotonic(),
    )


run_callback = run_dtmf_callback
