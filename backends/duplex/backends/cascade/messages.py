"""Conversation items -> chat-completions messages, the wire shape every local LLM speaks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from duplex.agents.backend import ToolChoice
from duplex.agents.conversation import FunctionCall, FunctionCallOutput, Item, Message
from duplex.agents.tools import FunctionTool

#: Output given to a call that never got one, because OpenAI-style servers refuse a tool call
#: without a tool message after it (it happens when a turn was interrupted mid-tool).
MISSING_OUTPUT = "No result: the call did not complete."


def to_chat_messages(instructions: str, items: Sequence[Item]) -> list[dict[str, Any]]:
    """System instructions, then the items in order.

    Consecutive function calls become one assistant message with ``tool_calls`` (merged
    into the assistant text just before them), outputs become ``tool`` messages, and
    outputs whose call is unknown are dropped because servers reject them. Servers also
    require each call's ``tool`` message right after it, so an output that arrived after
    later messages (a tool slower than the caller's next turn) is moved up to its call.
    """
    out: list[dict[str, Any]] = []
    if instructions.strip():
        out.append({"role": "system", "content": instructions})
    outputs: dict[str, str] = {}
    for it in items:
        if isinstance(it, FunctionCallOutput):
            outputs.setdefault(it.call_id, it.output)
    pending: list[str] = []  # calls of the current assistant turn still waiting for output

    def close_turn() -> None:
        for call_id in pending:
            content = outputs.get(call_id, MISSING_OUTPUT)
            out.append({"role": "tool", "tool_call_id": call_id, "content": content})
        pending.clear()

    for item in items:
        if isinstance(item, Message):
            text = item.text.strip()
            if not text:
                continue
            close_turn()
            role = "system" if item.role in ("system", "developer") else item.role
            out.append({"role": role, "content": text})
        elif isinstance(item, FunctionCall):
            call = {
                "id": item.call_id,
                "type": "function",
                "function": {"name": item.name, "arguments": item.arguments or "{}"},
            }
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
            pending.append(item.call_id)
        elif item.call_id in pending:  # otherwise already sent with its call, or orphaned
            out.append({"role": "tool", "tool_call_id": item.call_id, "content": item.output})
            pending.remove(item.call_id)
    close_turn()
    return out


def tool_schemas(tools: Sequence[FunctionTool]) -> list[dict[str, Any]]:
    return [t.schema() for t in tools]


def chat_tool_choice(choice: ToolChoice | None) -> str | dict[str, Any] | None:
    """``auto``/``none``/``required`` pass through; any other string names one function."""
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    return {"type": "function", "function": {"name": choice}}
