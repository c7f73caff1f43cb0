"""A restaurant receptionist that hands callers to a booking agent with an MCP calendar.

``agent dev examples/receptionist.py`` — with OpenAI (``OPENAI_API_KEY``) just talk.
On the offline default the echo stand-in cannot choose tools, so drive them by typing
in the playground: ``/transfer_to_booking``, then ``/check_availability day=Tuesday``
and ``/book day=Tuesday time=19:00 people=2 name=Ada``. Shown on the way: the handoff
(the playground names the active agent), the calendar's tools served by an MCP server,
a thinking sound while the calendar is slow, and an idle caller asked once whether
they are still there before the call ends.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from duplex.agents import Agent, function_tool
from duplex.agents.app import AppContext
from duplex.agents.background import BackgroundAudio
from duplex.agents.handoff import KeepLastTurns
from duplex.plugins.mcp import MCPServerStdio

CALENDAR = Path(__file__).with_name("calendar_server.py")


class Booking(Agent):
    instructions = (
        "You take table bookings for Luigi's. Check availability with the calendar tools "
        "before you book, confirm day, time, party size and name, and keep answers short."
    )
    chat_ctx = KeepLastTurns(4)

    def __init__(self) -> None:
        calendar = MCPServerStdio(
            sys.executable,
            [str(CALENDAR)],
            name="calendar",
            errlog=open(os.devnull, "w"),  # noqa: SIM115
        )
        super().__init__(mcp_servers=[calendar])


class Receptionist(Agent):
    instructions = (
        "You are the receptionist of Luigi's restaurant. Greet the caller briefly. "
        "For a table booking, hand over to the booking desk with transfer_to_booking."
    )

    @function_tool
    async def transfer_to_booking(self) -> Agent:
        """Pass the caller to the booking desk."""
        return Booking()


async def entrypoint(ctx: AppContext) -> None:
    session = await ctx.start(Receptionist())
    BackgroundAudio().attach(session)
