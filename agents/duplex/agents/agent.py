"""`Agent`: the developer's class: instructions plus tools (its `@function_tool` methods)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .tool_provider import ToolProvider
from .tools import FunctionTool, build_tool, find_tools

if TYPE_CHECKING:
    from .session import AgentSession


class Agent:
    """Subclass it; set ``instructions`` and decorate methods with `@function_tool`."""

    instructions: str = "You are a helpful voice assistant. Keep answers short."
    #: Interruption options for this agent; None falls back to the session's setting.
    allow_interruptions: bool | None = None
    min_interruption_ms: float | None = None
    resume_false_interruption: bool | None = None

    def __init__(
        self,
        *,
        instructions: str | None = None,
        tools: Sequence[Callable[..., Any] | FunctionTool] = (),
        allow_interruptions: bool | None = None,
        min_interruption_ms: float | None = None,
        resume_false_interruption: bool | None = None,
        mcp_servers: Sequence[ToolProvider] = (),
    ) -> None:
        if instructions is not None:
            self.instructions = instructions
        if allow_interruptions is not None:
            self.allow_interruptions = allow_interruptions
        if min_interruption_ms is not None:
            self.min_interruption_ms = min_interruption_ms
        if resume_false_interruption is not None:
            self.resume_false_interruption = resume_false_interruption
        extra = [t if isinstance(t, FunctionTool) else build_tool(t) for t in tools]
        self._tools = find_tools(self) + extra
        names = [t.name for t in self._tools]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"duplicate tool names: {sorted(dupes)}")
        #: Started with the session; their tools join this agent's (`duplex.plugins.mcp`).
        self.mcp_servers: list[ToolProvider] = list(mcp_servers)

    @property
    def tools(self) -> list[FunctionTool]:
        return list(self._tools)

    async def on_user_idle(self, session: AgentSession, count: int) -> None:
        """The caller has been silent ``count`` times in a row after the agent spoke.

        By default: ask once more whether they are still there, and after
        ``session.max_idle_prompts`` unanswered prompts end the call.
        """
        if count > session.max_idle_prompts:
            await session.aclose("user_idle")
            return
        await session.generate_reply(
            instructions="The caller has said nothing for a while. In one short sentence, "
            "ask whether they are still there."
        )

    async def on_enter(self, session: AgentSession) -> None:
        """Called once the session is live; e.g. ``await session.generate_reply()`` to greet."""
