"""A small calendar as an MCP server (the official SDK), used by ``receptionist.py``.

Run alone to try it with any MCP client: ``python examples/calendar_server.py``
(stdio), or ``python examples/calendar_server.py http 8765`` (streamable HTTP on
127.0.0.1).
"""

from __future__ import annotations

import asyncio
import sys

from mcp.server.mcpserver import MCPServer

calendar = MCPServer("calendar")

_FREE = {
    "monday": ["18:00", "20:30"],
    "tuesday": ["19:00", "19:30", "21:00"],
    "friday": ["20:00"],
}
_BOOKED: list[str] = []


@calendar.tool()
async def check_availability(day: str) -> str:
    """Free table times on a day of this week."""
    await asyncio.sleep(0.6)  # a slow back office: the caller hears the thinking sound
    times = _FREE.get(day.strip().lower(), [])
    return f"Free on {day}: {', '.join(times)}." if times else f"Nothing free on {day}."


@calendar.tool()
def book(day: str, time: str, people: int, name: str) -> str:
    """Book a table."""
    free = _FREE.get(day.strip().lower(), [])
    if time not in free:
        return f"{time} on {day} is not free."
    free.remove(time)
    _BOOKED.append(f"{name} x{people} {day} {time}")
    return f"Booked a table for {people} on {day} at {time} for {name}."


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "http":
        calendar.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        calendar.run("stdio")
