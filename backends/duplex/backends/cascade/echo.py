"""`EchoLLM`: a stand-in language model that repeats the caller, for offline demos and tests.

It is not a model: it needs no network and no weights, which makes the offline
default runnable anywhere. Point ``DUPLEX_LLM_URL`` at a real server for real replies.
Typed slash commands drive tools by hand (``/book_table {"people": 2}`` or
``/book_table people=2``), so an app's tool flow can be tried without a model.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from duplex.agents.backend import ToolChoice, Usage
from duplex.agents.stages import LLM, LLMChunk, TextChunk, ToolCallChunk, UsageChunk


class EchoLLM(LLM):
    """Answers "You said: <the caller's last words>."; calls a tool only when told to."""

    def __init__(
        self, prefix: str = "You said:", *, silent_reply: str = "I did not catch that."
    ) -> None:
        self.prefix = prefix
        self.silent_reply = silent_reply

    async def stream(
        self,
        messages: Sequence[dict[str, Any]],
        *,
        tools: Sequence[dict[str, Any]] = (),
        tool_choice: ToolChoice | None = None,
    ) -> AsyncIterator[LLMChunk]:
        last = messages[-1] if messages else {}
        heard = next(
            (str(m.get("content") or "") for m in reversed(messages) if m.get("role") == "user"),
            "",
        ).strip()
        prompt = sum(len(str(m.get("content") or "").split()) for m in messages)
        command = _slash_command(heard, tools) if last.get("role") == "user" else None
        if command is not None and tool_choice != "none":
            name, arguments = command
            yield ToolCallChunk(f"call_{uuid.uuid4().hex[:12]}", name, arguments)
            yield UsageChunk(Usage(input_tokens=prompt, input_text_tokens=prompt))
            return
        if last.get("role") == "tool":
            reply = str(last.get("content") or "Done.")
        else:
            reply = f"{self.prefix} {heard}" if heard else self.silent_reply
        if reply[-1] not in ".!?":
            reply += "."
        words = reply.split(" ")
        for i, word in enumerate(words):
            yield TextChunk(word if i == 0 else " " + word)
        yield UsageChunk(
            Usage(
                input_tokens=prompt,
                output_tokens=len(words),
                input_text_tokens=prompt,
                output_text_tokens=len(words),
            )
        )


def _slash_command(text: str, tools: Sequence[dict[str, Any]]) -> tuple[str, str] | None:
    """``/name {json}`` or ``/name key=value ...`` for one of ``tools``, as (name, JSON)."""
    if not text.startswith("/"):
        return None
    name, _, rest = text[1:].partition(" ")
    known = {str(t.get("function", {}).get("name")) for t in tools}
    if name not in known:
        return None
    rest = rest.strip()
    if rest.startswith("{"):
        return name, rest
    arguments: dict[str, Any] = {}
    for pair in rest.split():
        key, _, value = pair.partition("=")
        try:
            arguments[key] = json.loads(value)
        except json.JSONDecodeError:
            arguments[key] = value
    return name, json.dumps(arguments)
