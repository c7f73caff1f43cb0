"""A handoff over the OpenAI Realtime protocol: one schema-valid session.update, same socket."""

from __future__ import annotations

from duplex.agents import Agent, AgentSession, function_tool
from duplex.agents.conversation import FunctionCallOutput
from duplex.agents.events import AgentHandoff, ConversationItemAdded, ToolExecuted
from duplex.agents.testing import MemoryTransport

from .helpers import backend
from .server import RealtimeTestServer, Reply


class Booking(Agent):
    instructions = "You book tables."

    @function_tool
    async def book(self, people: int) -> str:
        """Book a table. people: how many."""
        return f"booked for {people}"


class Reception(Agent):
    instructions = "You greet callers."

    @function_tool
    async def transfer_to_booking(self) -> Agent:
        """Pass the caller to the booking desk."""
        return Booking(backend_options={"voice": "cedar"})


async def test_handoff_sends_one_session_update_on_the_same_connection(
    server: RealtimeTestServer,
) -> None:
    server.replies.extend(
        [
            Reply(text="", function_calls=(("transfer_to_booking", "{}"),)),
            Reply(text="Booking desk, how many people?", audio_ms=400),
        ]
    )
    session = AgentSession(agent=Reception(), backend=backend(server, turn_detection=None))
    await session.start(MemoryTransport(output_rate=24000, playout="auto"))
    updates_before = len(server.of_type("session.update"))
    handoff = session.next_event(AgentHandoff)
    executed = session.next_event(ToolExecuted)
    spoken = session.next_event(
        ConversationItemAdded, lambda e: getattr(e.item, "role", None) == "assistant"
    )
    await session.generate_reply()
    assert await handoff == AgentHandoff("Reception", "Booking")
    await spoken
    await server.wait_until(lambda: server.current.active is None)
    updates = server.of_type("session.update")[updates_before:]
    assert len(updates) == 1  # instructions, tools and voice together, exactly once
    sent = updates[0]["session"]
    assert sent["instructions"] == "You book tables."
    assert [t["name"] for t in sent["tools"]] == ["book"]
    # No audio had been produced yet, so the new voice was accepted.
    voice = sent.get("voice") or sent.get("audio", {}).get("output", {}).get("voice")
    assert voice == "cedar"
    # The follow-up reply was requested after the update, on the same connection.
    kinds = server.received_types()
    update_at = max(i for i, t in enumerate(kinds) if t == "session.update")
    assert kinds.index("response.create", update_at) > update_at
    assert len(server.connections) == 1
    out = (await executed).output
    assert out.output == "Transferred to Booking."
    outputs = server.created_items("function_call_output")
    assert [o["output"] for o in outputs] == ["Transferred to Booking."]
    assert [it.id for it in session.conversation if isinstance(it, FunctionCallOutput)] == [
        o["id"] for o in outputs
    ]
    await session.aclose()
