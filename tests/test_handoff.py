"""Handoffs: a tool (or code) passes the call to another agent on the same connection."""

from __future__ import annotations

import asyncio

import pytest

from duplex.agents import Agent, AgentSession, EnergyVAD, function_tool
from duplex.agents.conversation import FunctionCall, FunctionCallOutput, Message
from duplex.agents.events import AgentHandoff, AgentInterrupted, ToolExecuted
from duplex.agents.handoff import KeepLastTurns, Summarize
from duplex.agents.testing import MemoryTransport, Reply, ScriptedBackend, ScriptedCall

from .test_session import TURN, speak

HOOKS: list[str] = []


class Booking(Agent):
    instructions = "You book tables."

    @function_tool
    async def book(self, people: int) -> str:
        """Book a table. people: how many."""
        return f"booked for {people}"

    async def on_enter(self, session: AgentSession) -> None:
        HOOKS.append("booking.enter")

    async def on_exit(self, session: AgentSession) -> None:
        HOOKS.append("booking.exit")


class Reception(Agent):
    instructions = "You greet callers."

    def __init__(self, next_agent: Agent | None = None, note: str | None = None) -> None:
        super().__init__()
        self.next_agent = next_agent or Booking()
        self.note = note

    @function_tool
    async def transfer_to_booking(self) -> object:
        """Pass the caller to the booking desk."""
        return self.next_agent if self.note is None else (self.next_agent, self.note)

    async def on_exit(self, session: AgentSession) -> None:
        HOOKS.append("reception.exit")


async def start(backend: ScriptedBackend, agent: Agent) -> tuple[AgentSession, MemoryTransport]:
    transport = MemoryTransport(output_rate=24000, playout="manual")
    session = AgentSession(agent=agent, backend=backend, vad=EnergyVAD(), turn=TURN)
    await session.start(transport)
    return session, transport


@pytest.fixture(autouse=True)
def _hooks() -> None:
    HOOKS.clear()


def outputs(backend: ScriptedBackend) -> list[FunctionCallOutput]:
    return [
        op.item
        for c in backend.session.called("sync")
        for op in c.args["ops"]
        if type(op).__name__ == "Create" and isinstance(op.item, FunctionCallOutput)
    ]


async def test_a_tool_returning_an_agent_hands_off_before_the_follow_up() -> None:
    booking = Booking()
    backend = ScriptedBackend(
        [
            Reply(calls=(ScriptedCall("transfer_to_booking"),)),
            Reply(text="Booking here", audio_ms=200),
        ]
    )
    session, _ = await start(backend, Reception(booking))
    handoff = session.next_event(AgentHandoff)
    executed = session.next_event(ToolExecuted)
    await session.generate_reply()
    assert await handoff == AgentHandoff("Reception", "Booking")
    assert HOOKS == ["reception.exit", "booking.enter"]
    assert session.agent is booking
    out = (await executed).output
    assert out.output == "Transferred to Booking." and not out.is_error
    await backend.session.wait_for_call("create_response", count=2)
    # The follow-up was asked for after the new instructions and tools reached the backend.
    order = [c.method for c in backend.session.calls]
    follow_up = [i for i, m in enumerate(order) if m == "create_response"][1]
    assert order.index("update_instructions") < order.index("update_tools") < follow_up
    assert backend.session.instructions == "You book tables."
    assert [t.name for t in backend.session.tools] == ["book"]
    assert len(backend.session.called("update_instructions")) == 1
    assert [o.output for o in outputs(backend)] == ["Transferred to Booking."]
    # The conversation is intact: the call and its output, in order, nothing else.
    kinds = [type(it).__name__ for it in session.conversation]
    assert kinds[:2] == ["FunctionCall", "FunctionCallOutput"]
    await session.aclose()


async def test_a_tool_returning_agent_and_result_gives_the_model_the_result() -> None:
    backend = ScriptedBackend(
        [Reply(calls=(ScriptedCall("transfer_to_booking"),)), Reply(text="ok", audio_ms=100)]
    )
    session, _ = await start(backend, Reception(note="the caller wants a table for two"))
    executed = session.next_event(ToolExecuted)
    await session.generate_reply()
    assert (await executed).output.output == "the caller wants a table for two"
    await backend.session.wait_for_call("create_response", count=2)
    assert [o.output for o in outputs(backend)] == ["the caller wants a table for two"]
    await session.aclose()


async def test_update_agent_from_code_applies_its_options() -> None:
    backend = ScriptedBackend([])
    session, _ = await start(backend, Reception())
    slower = TURN.__class__(threshold=0.6, prefix_padding_ms=100, silence_duration_ms=900)
    booking = Booking(backend_options={"temperature": 0.7}, turn=slower)
    await session.update_agent(booking)
    options = await backend.session.wait_for_call("update_options")
    assert options.args == {"temperature": 0.7}
    assert session.turn == slower
    await session.update_agent(booking)  # the same agent again changes nothing
    assert len(backend.session.called("update_instructions")) == 1
    await session.aclose()


async def test_keep_last_turns_and_summary_policies() -> None:
    backend = ScriptedBackend([])
    session, _ = await start(backend, Reception())
    for i in range(3):
        session.append(Message.text_message("user", f"question {i}"))
        session.append(Message.text_message("assistant", f"answer {i}"))
    session.append(FunctionCall(call_id="c1", name="lookup", arguments="{}"))
    session.append(Message.text_message("user", "question 3"))
    session.append(FunctionCallOutput("c1", "found", name="lookup"))
    await session.sync()
    await session.update_agent(Booking(chat_ctx=KeepLastTurns(1)))
    texts = [getattr(it, "text", type(it).__name__) for it in session.conversation]
    # The last turn, and the call whose output it holds, stay together.
    assert texts == ["FunctionCall", "question 3", "FunctionCallOutput"]
    assert [it.id for it in backend.session.mirror] == [it.id for it in session.conversation]

    seen: list[int] = []

    def summary(earlier: object) -> str:
        seen.append(len(earlier))  # type: ignore[arg-type]
        return "the caller asked four questions"

    session.append(Message.text_message("assistant", "answer 3"))
    session.append(Message.text_message("user", "question 4"))
    await session.update_agent(Booking(chat_ctx=Summarize(summary)))
    first = session.conversation.items[0]
    assert isinstance(first, Message) and first.role == "system"
    assert "four questions" in first.text and seen == [4]  # the call, its turn, the answer
    assert [getattr(it, "text", "") for it in session.conversation][1:] == ["question 4"]
    assert [it.id for it in backend.session.mirror] == [it.id for it in session.conversation]
    await session.aclose()


async def test_a_barge_in_during_a_handoff_reply_truncates_only_what_was_heard() -> None:
    gate = asyncio.Event()

    class SlowBooking(Booking):
        async def on_enter(self, session: AgentSession) -> None:
            await gate.wait()
            HOOKS.append("booking.enter")

    backend = ScriptedBackend(
        [
            Reply(
                text="one moment please", audio_ms=600, calls=(ScriptedCall("transfer_to_booking"),)
            ),
            Reply(text="next", audio_ms=100),
        ]
    )
    session, transport = await start(backend, Reception(SlowBooking()))
    handoff = session.next_event(AgentHandoff)
    await session.generate_reply()
    await backend.session.handles[0].done
    await transport.output.play(200)
    await handoff  # the handoff is under way (its on_enter waits)
    interrupted = session.next_event(AgentInterrupted)
    speak(transport, ms=300)
    cut = await interrupted
    truncate = await backend.session.wait_for_call("truncate")
    assert truncate.args["audio_end_ms"] == pytest.approx(cut.played_ms)
    assert 180 <= cut.played_ms <= 240
    gate.set()
    await backend.session.wait_for_call("create_response", count=2)
    assert [o.output for o in outputs(backend)] == ["Transferred to SlowBooking."]
    item = session.conversation.get(cut.item_id or "")
    assert isinstance(item, Message) and item.truncated_ms == truncate.args["audio_end_ms"]
    await session.aclose()
