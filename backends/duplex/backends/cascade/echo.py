"""`EchoLLM`: a stand-in language model that repeats the caller, for offline demos and tests.

It is not a model: it needs no network and no weights, which makes the offline
default runnable anywhere. Point ``DUPLEX_LLM_URL`` at a real server for real replies.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from duplex.agents.backend import ToolChoice, Usage
from duplex.agents.stages import LLM, LLMChunk, TextChunk, UsageChunk


class EchoLLM(LLM):
    """Answers "You said: <the caller's last words>." and never calls tools."""

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
        heard = next(
            (str(m.get("content") or "") for m in reversed(messages) if m.get("role") == "user"),
            "",
        ).strip()
        reply = f"{self.prefix} {heard}" if heard else self.silent_reply
        if reply[-1] not in ".!?":
            reply += "."
        words = reply.split(" ")
        for i, word in enumerate(words):
            yield TextChunk(word if i == 0 else " " + word)
        prompt = sum(len(str(m.get("content") or "").split()) for m in messages)
        yield UsageChunk(
            Usage(
                input_tokens=prompt,
                output_tokens=len(words),
                input_text_tokens=prompt,
                output_text_tokens=len(words),
            )
        )
