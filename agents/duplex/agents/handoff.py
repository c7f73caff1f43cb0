"""Handoffs: one `Agent` passes the live call to another, keeping what the caller heard.

A tool returns the next agent (or ``(agent, result)``), or code calls
`AgentSession.update_agent`. The backend session stays connected: the new agent's
instructions, tools and options go in one update, the conversation is kept (or reduced
by the new agent's `chat_ctx` policy), and the hooks run old ``on_exit`` → new ``on_enter``.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from .conversation import Conversation, FunctionCall, FunctionCallOutput, Item, Message
from .events import AgentHandoff

if TYPE_CHECKING:
    from .agent import Agent
    from .session import AgentSession


@dataclass(frozen=True)
class KeepAll:
    """The new agent sees the whole conversation (the default)."""


@dataclass(frozen=True)
class KeepLastTurns:
    """Only the caller's last ``turns`` turns and what followed them stay."""

    turns: int


@dataclass(frozen=True)
class Summarize:
    """Earlier items become one system note whose text the developer's function writes."""

    summary: Callable[[Conversation], str | Awaitable[str]]
    keep_turns: int = 1


ChatContextPolicy: TypeAlias = KeepAll | KeepLastTurns | Summarize


@dataclass(frozen=True)
class Reduction:
    """What a policy does to the conversation: items to delete, a note to put first."""

    delete: tuple[str, ...] = ()
    note: Message | None = None


async def reduce(conversation: Conversation, policy: ChatContextPolicy | None) -> Reduction:
    if policy is None or isinstance(policy, KeepAll):
        return Reduction()
    turns = policy.turns if isinstance(policy, KeepLastTurns) else policy.keep_turns
    cut = _cut_index(conversation.items, max(0, turns))
    dropped = tuple(it.id for it in conversation.items[:cut])
    if not dropped:
        return Reduction()
    if isinstance(policy, KeepLastTurns):
        return Reduction(dropped)
    text = policy.summary(Conversation(conversation.items[:cut]))
    if inspect.isawaitable(text):
        text = await text
    note = Message.text_message("system", f"Summary of the conversation so far: {text}")
    return Reduction(dropped, note)


def _cut_index(items: Sequence[Item], turns: int) -> int:
    """Start of the ``turns``-th last user message, never between a call and its output."""
    if turns == 0:
        cut = len(items)
    else:
        users = [i for i, it in enumerate(items) if isinstance(it, Message) and it.role == "user"]
        if len(users) <= turns:
            return 0
        cut = users[-turns]
    kept_outputs = {it.call_id for it in items[cut:] if isinstance(it, FunctionCallOutput)}
    for i, it in enumerate(items[:cut]):
        if isinstance(it, FunctionCall) and it.call_id in kept_outputs:
            return i
    return cut


def handoff_target(result: Any) -> tuple[Agent | None, Any]:
    """A tool's return value split into (next agent, what the model reads)."""
    from .agent import Agent

    if isinstance(result, Agent):
        return result, f"Transferred to {result.label}."
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], Agent):
        return result[0], result[1]
    return None, result


async def hand_off(session: AgentSession, agent: Agent) -> None:
    """The steps of a handoff, in the order the docs promise (docs/agents/handoffs.md)."""
    old = session.agent
    if agent is old:
        return
    await old.on_exit(session)
    reduction = await reduce(session.conversation, agent.chat_ctx)
    for item_id in reduction.delete:
        session.conversation.remove(item_id)
    if reduction.note is not None:
        session.conversation.insert_after(None, reduction.note)
    tools = await session.use_tools_of(agent)
    session.agent = agent
    if agent.turn is not None:
        session.turn = agent.turn
        if session.input is not None and session.input.detector is not None:
            session.input.detector.options = agent.turn
    async with session.control:
        await session.backend_session.update_agent(
            instructions=agent.instructions, tools=tools, **dict(agent.backend_options or {})
        )
    if reduction.delete or reduction.note is not None:
        await session.sync()
    session.emit(AgentHandoff(old.label, agent.label))
    await agent.on_enter(session)
