"""A real MCP server for the tests (the SDK's own server API), over stdio or streamable HTTP.

Run: ``python tool_server.py stdio`` or ``python tool_server.py http PORT``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Literal

from mcp.server.mcpserver import Context, MCPServer
from pydantic import BaseModel

server = MCPServer("test-tools")


class Guest(BaseModel):
    name: str
    phone: str | None = None


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def book_table(
    date: str, people: int, guest: Guest, seating: Literal["inside", "terrace"] = "inside"
) -> str:
    """Book a table for a guest."""
    return f"Booked {people} at {seating} on {date} for {guest.name}."


@server.tool()
def count_words(words: list[str], ignore_case: bool = False) -> dict[str, int]:
    """Count each word."""
    counts: dict[str, int] = {}
    for w in words:
        key = w.lower() if ignore_case else w
        counts[key] = counts.get(key, 0) + 1
    return counts


@server.tool()
def fail(reason: str) -> str:
    """Always raises."""
    raise ValueError(f"cannot do it: {reason}")


@server.tool()
async def slow(seconds: float) -> str:
    """Sleeps, then answers."""
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


@server.tool()
def pid() -> int:
    """The server's process id (so a test can check the process is gone)."""
    return os.getpid()


@server.tool()
def die() -> str:
    """The server process exits in the middle of the call."""
    os._exit(3)


@server.tool()
async def learn_tool(ctx: Context) -> str:
    """Adds a tool `late_tool` and tells subscribers the list changed."""

    def late_tool(x: int) -> int:
        """Doubles x."""
        return 2 * x

    server.add_tool(late_tool)
    await ctx.notify_tools_changed()
    return "learned"


if __name__ == "__main__":
    if sys.argv[1] == "http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("stdio")
