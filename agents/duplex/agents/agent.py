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

    def __init__(
        self,
        *,
        instructions: str | None = None,
        tools: Sequence[Callable[..., Any] | FunctionTool] = (),
        mcp_servers: Sequence[ToolProvider] = (),
    ) -> None:
        if instructions is not None:
            self.instructions = instructions
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

    async def on_enter(self, session: AgentSession) -> None:
        """Called once the session is live; e.g. ``await session.generate_reply()`` to greet."""
