"""Phone callers: who is calling, the keys they press, hanging up and transferring.

LiveKit's SIP service joins a phone call to a room as a participant of kind SIP
whose ``sip.*`` attributes describe the call; key presses arrive as SIP DTMF
packets. Hanging up is removing that participant; transferring is a SIP REFER
asked of the server API.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from duplex.agents.errors import ConfigurationError, ToolError
from duplex.agents.tools import FunctionTool, build_tool, function_tool
from livekit import api, rtc

if TYPE_CHECKING:
    from .room import RoomTransport

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


@dataclass(frozen=True)
class DtmfDigit:
    digit: str
    code: int
    participant_identity: str | None
    at: float


DtmfCallback = Callable[[DtmfDigit], Awaitable[None] | None]


class DtmfBuffer:
    """Keeps the digits pressed so a tool can read an entry (a PIN, a menu choice)."""

    def __init__(self, max_digits: int = 64) -> None:
        self._digits: list[DtmfDigit] = []
        self._max = max_digits
        self._changed = asyncio.Event()

    def push(self, digit: DtmfDigit) -> None:
        self._digits.append(digit)
        del self._digits[: -self._max]
        self._changed.set()

    @property
    def pending(self) -> str:
        return "".join(d.digit for d in self._digits)

    def clear(self) -> None:
        self._digits.clear()

    async def read(
        self, max_digits: int = 16, *, timeout_s: float = 10.0, terminator: str = "#"
    ) -> str:
        """Digits up to ``terminator`` (not included), ``max_digits``, or a pause of ``timeout_s``.

        The pause restarts on every key, as phone menus do; what is returned is consumed.
        """
        while True:
            text = self.pending
            if terminator and terminator in text:
                entry = text[: text.index(terminator)]
                self._consume(len(entry) + 1)
                return entry
            if len(text) >= max_digits:
                self._consume(max_digits)
                return text[:max_digits]
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout_s)
            except asyncio.TimeoutError:
                self._consume(len(text))
                return text

    def _consume(self, n: int) -> None:
        del self._digits[:n]


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


class SipTools:
    """Tools that let the model act on the phone call the transport follows."""

    def __init__(self, transport: RoomTransport, *, allow_transfer_to: tuple[str, ...] = ()):
        self._t = transport
        #: When set, the model may only transfer to these destinations.
        self.allow_transfer_to = allow_transfer_to

    def _caller(self) -> str:
        info = self._t.sip_call
        if info is None:
            raise ToolError("the caller is not on a phone line")
        return info.identity

    @function_tool
    async def end_call(self) -> str:
        """Hang up the phone call. Say goodbye first."""
        identity = self._caller()
        await self._t.wait_for_playout()
        await self._t.hang_up(identity)
        return "call ended"

    @function_tool
    async def transfer_call(self, destination: str) -> str:
        """Transfer the caller to another phone number or SIP address.

        destination: a phone number like +15551234567, or sip:user@host
        """
        identity = self._caller()
        target = destination if ":" in destination else f"tel:{destination}"
        if self.allow_transfer_to and destination not in self.allow_transfer_to:
            raise ToolError(f"transfers are only allowed to: {', '.join(self.allow_transfer_to)}")
        await self._t.wait_for_playout()
        await self._t.transfer(identity, target)
        return f"transferred to {destination}"

    @function_tool
    async def read_keypad(self, max_digits: int = 16, timeout_s: float = 8.0) -> str:
        """Read the digits the caller types on the phone keypad, ending with # or a pause.

        max_digits: stop after this many digits
        timeout_s: seconds of no key presses that end the entry
        """
        digits = await self._t.dtmf.read(max_digits, timeout_s=timeout_s)
        return digits or "no digits were pressed"

    def tools(self) -> list[FunctionTool]:
        return [
            build_tool(self.end_call),
            build_tool(self.transfer_call),
            build_tool(self.read_keypad),
        ]


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


async def run_callback(cb: DtmfCallback, digit: DtmfDigit) -> None:
    result = cb(digit)
    if result is not None:
        with contextlib.suppress(asyncio.CancelledError):
            await result
