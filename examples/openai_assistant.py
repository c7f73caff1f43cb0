"""A restaurant concierge on the OpenAI Realtime API, with two tools.

Talk to it (needs ``OPENAI_API_KEY``; ``OPENAI_BASE_URL`` points it at any
compatible server, e.g. Azure's GA endpoint or a local one)::

    agent dev examples/openai_assistant.py        # in the browser playground
    agent console examples/openai_assistant.py    # with the local microphone and speaker

Or type one turn and read the answer, no audio device needed::

    python examples/openai_assistant.py "Is it warm in Rome? Book Da Enzo for two at 8pm."
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from duplex.agents import Agent, AgentSession, function_tool
from duplex.agents.events import AgentTranscribed, SessionError, ToolExecuted
from duplex.agents.testing import MemoryTransport
from duplex.backends.openai import OpenAIRealtime, ServerVAD

FORECAST = {"rome": "sunny, 24 °C", "paris": "cloudy, 17 °C", "oslo": "snow, -3 °C"}


class Concierge(Agent):
    instructions = (
        "You are a restaurant concierge. Answer in one or two short sentences. "
        "Use get_weather for the weather and book_table to make bookings; "
        "never invent a booking reference."
    )

    def __init__(self) -> None:
        super().__init__()
        self.bookings: list[str] = []

    @function_tool
    def get_weather(self, city: str) -> str:
        """Today's weather in a city.

        city: the city name, e.g. "Rome".
        """
        return FORECAST.get(city.strip().lower(), "no forecast for that city")

    @function_tool
    async def book_table(self, restaurant: str, people: int, time: str) -> str:
        """Book a table.

        restaurant: the restaurant's name.
        people: how many guests (1-12).
        time: when, e.g. "20:00".
        """
        if not 1 <= people <= 12:
            return "we can book for 1 to 12 guests"
        ref = f"BK{len(self.bookings) + 1:03d}"
        self.bookings.append(ref)
        return f"booked {restaurant} for {people} at {time}, reference {ref}"


def create_session() -> AgentSession:
    """The session `agent dev` / `agent console` run for each call."""
    return make_session()


def make_session(base_url: str | None = None) -> AgentSession:
    backend = OpenAIRealtime(
        voice="marin",
        base_url=base_url,
        turn_detection=ServerVAD(silence_duration_ms=400),
    )
    return AgentSession(agent=Concierge(), backend=backend)


async def typed_turn(text: str, base_url: str | None = None, timeout: float = 60.0) -> str:
    """One typed question, answered (with tools) by the model; returns the final answer."""
    session = make_session(base_url)
    session.on(
        ToolExecuted,
        lambda e: print(f"  [tool] {e.call.name}({e.call.arguments}) -> {e.output.output}"),
    )
    session.on(SessionError, lambda e: print(f"  [error] {e.code}: {e.message}", file=sys.stderr))
    await session.start(MemoryTransport(playout="auto"))
    try:
        await session.send_text(text)
        while True:
            said = await session.wait_for(AgentTranscribed, lambda e: e.final, timeout=timeout)
            if said.text.strip():
                return said.text
    finally:
        await session.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("text", help="what the caller says")
    parser.add_argument("--base-url", default=None, help="a compatible server (default: OpenAI)")
    args = parser.parse_args(argv)
    answer = asyncio.run(typed_turn(args.text, args.base_url))
    print(answer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
