"""What every phone path shares: key presses, the keypad, and the call-control tools.

A phone call reaches an agent as a LiveKit SIP participant, as a provider's media
stream (Twilio, Telnyx) or as a SIP call answered directly. Each of those
transports exposes a `PhoneLine` (hang up, transfer, keypad), so one set of
tools, `sip_tools`, works on all of them and no plugin imports another.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .errors import ToolError
from .tools import FunctionTool, build_tool, function_tool

__all__ = [
    "DTMF_CODES",
    "DtmfBuffer",
    "DtmfCallback",
    "DtmfDigit",
    "DtmfEvent",
    "PhoneLine",
    "PhoneTools",
    "SupportsPhoneLine",
    "dtmf_digit",
    "run_dtmf_callback",
    "sip_tools",
    "transfer_target",
]

#: RFC 4733 event codes of the sixteen keypad keys.
DTMF_CODES: dict[str, int] = {
    **{str(d): d for d in range(10)},
    "*": 10,
    "#": 11,
    "A": 12,
    "B": 13,
    "C": 14,
    "D": 15,
}


@dataclass(frozen=True)
class DtmfDigit:
    """One key press on the caller's phone."""

    digit: str
    code: int
    participant_identity: str | None
    at: float


#: The name the telephony docs use; the same class.
DtmfEvent = DtmfDigit

DtmfCallback = Callable[[DtmfDigit], Awaitable[None] | None]


def dtmf_digit(digit: str, *, who: str | None = None, at: float | None = None) -> DtmfDigit:
    """A `DtmfDigit` from a key name ("0"-"9", "*", "#", "A"-"D"); anything else is a ValueError."""
    key = digit.strip().upper()
    if key not in DTMF_CODES:
        raise ValueError(f"not a DTMF key: {digit!r}")
    return DtmfDigit(key, DTMF_CODES[key], who, time.monotonic() if at is None else at)


async def run_dtmf_callback(cb: DtmfCallback, digit: DtmfDigit) -> None:
    result = cb(digit)
    if result is not None:
        with contextlib.suppress(asyncio.CancelledError):
            await result


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


@runtime_checkable
class PhoneLine(Protocol):
    """Call control of one phone call, whatever carries it.

    Methods raise `ToolError` when there is no phone call to act on (the caller is
    in a browser), so the model reads why instead of the call failing.
    """

    @property
    def dtmf(self) -> DtmfBuffer: ...

    async def wait_for_playout(self) -> None:
        """Until the agent's queued voice has been played to the caller."""

    async def end_call(self) -> None:
        """Hang up."""

    async def transfer_call(self, target: str) -> None:
        """Cold transfer to ``tel:+1555...`` or ``sip:user@host``."""


@runtime_checkable
class SupportsPhoneLine(Protocol):
    """A transport that can hand out its `PhoneLine` (e.g. a LiveKit room's SIP caller)."""

    def phone_line(self) -> PhoneLine: ...


def transfer_target(destination: str) -> str:
    """``+1555...`` -> ``tel:+1555...``; ``sip:``/``tel:`` URIs pass through."""
    destination = destination.strip()
    if not destination:
        raise ToolError("a transfer needs a destination number or SIP address")
    return destination if ":" in destination else f"tel:{destination}"


class PhoneTools:
    """Tools that let the model act on the phone call a transport carries."""

    def __init__(self, line: PhoneLine, *, allow_transfer_to: tuple[str, ...] = ()) -> None:
        self._line = line
        #: When set, the model may only transfer to these destinations.
        self.allow_transfer_to = allow_transfer_to

    @function_tool
    async def end_call(self) -> str:
        """Hang up the phone call. Say goodbye first."""
        await self._line.wait_for_playout()
        await self._line.end_call()
        return "call ended"

    @function_tool
    async def transfer_call(self, destination: str) -> str:
        """Transfer the caller to another phone number or SIP address.

        destination: a phone number like +15551234567, or sip:user@host
        """
        target = transfer_target(destination)
        if self.allow_transfer_to and destination not in self.allow_transfer_to:
            raise ToolError(f"transfers are only allowed to: {', '.join(self.allow_transfer_to)}")
        await self._line.wait_for_playout()
        await self._line.transfer_call(target)
        return f"transferred to {destination}"

    @function_tool
    async def read_keypad(self, max_digits: int = 16, timeout_s: float = 8.0) -> str:
        """Read the digits the caller types on the phone keypad, ending with # or a pause.

        max_digits: stop after this many digits
        timeout_s: seconds of no key presses that end the entry
        """
        digits = await self._line.dtmf.read(max_digits, timeout_s=timeout_s)
        return digits or "no digits were pressed"

    def tools(self) -> list[FunctionTool]:
        return [
            build_tool(self.end_call),
            build_tool(self.transfer_call),
            build_tool(self.read_keypad),
        ]


def sip_tools(
    transport: PhoneLine | SupportsPhoneLine, *, allow_transfer_to: tuple[str, ...] = ()
) -> list[FunctionTool]:
    """``Agent(tools=sip_tools(transport))``: end_call, transfer_call, read_keypad.

    ``transport`` is a phone transport (media stream, direct SIP) or anything with a
    ``phone_line()``; for a LiveKit room use ``duplex.plugins.livekit.sip_tools``.
    """
    line = transport.phone_line() if isinstance(transport, SupportsPhoneLine) else transport
    if not isinstance(line, PhoneLine):
        raise TypeError(f"{type(transport).__name__} carries no phone call")
    return PhoneTools(line, allow_transfer_to=allow_transfer_to).tools()
