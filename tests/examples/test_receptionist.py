"""examples/receptionist.py on the offline default, driven by typed turns as documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from duplex.agents import EnergyVAD
from duplex.agents.app import load_app
from duplex.agents.conversation import Message
from duplex.agents.events import AgentHandoff, AgentStateChanged, ToolExecuted
from duplex.agents.testing import MemoryTransport
from duplex.backends.cascade import offline_backend

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "receptionist.py"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


async def test_handoff_mcp_calendar_and_spoken_results() -> None:
    spec = load_app(str(EXAMPLE))
    transport = MemoryTransport(input_rate=16000, output_rate=22050, playout="auto")
    session = await spec.start(transport, offline_backend(), vad=EnergyVAD())
    handoff = session.next_event(AgentHandoff)
    await session.send_text("/transfer_to_booking")
    assert await handoff == AgentHandoff("Receptionist", "Booking")

    async def typed(command: str, tool: str) -> tuple[str, str]:
        executed = session.next_event(ToolExecuted, lambda e: e.call.name == tool)
        spoken = session.next_event(
            AgentStateChanged, lambda e: e.old == "speaking" and e.new == "listening"
        )
        await session.send_text(command)
        out = (await executed).output
        assert not out.is_error, out.output
        await spoken
        said = [it for it in session.conversation if isinstance(it, Message)][-1]
        assert said.role == "assistant"
        return out.output, said.text

    output, said = await typed("/check_availability day=Tuesday", "check_availability")
    assert output == "Free on Tuesday: 19:00, 19:30, 21:00."
    assert said == output  # the echo stand-in reads the tool's result out
    output, _ = await typed("/book day=Tuesday time=19:00 people=2 name=Ada", "book")
    assert output == "Booked a table for 2 on Tuesday at 19:00 for Ada."
    output, _ = await typed("/check_availability day=Tuesday", "check_availability")
    assert "19:00" not in output  # the MCP server kept its state across calls
    assert transport.output.played_ms > 1000  # the results were spoken
    await session.aclose()
