"""What an `AgentSession` changes while the call goes on: instructions, tools, options, agent.

Kept apart from the session's wiring; each change goes to the backend under the
session's control lock, so it never interleaves with a sync or a reply request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .tool_provider import ProviderTools
from .tools import FunctionTool, build_tool

if TYPE_CHECKING:
    from .agent import Agent
    from .backend import BackendSession
    from .tool_runner import ToolRunner


class LiveChanges:
    """Mixed into `AgentSession`; the attributes below are the session's."""

    agent: Agent
    control: asyncio.Lock
    tools: ToolRunner
    _tool_list: list[FunctionTool]
    _providers: ProviderTools
    _backend: BackendSession | None

    @property
    def backend_session(self) -> BackendSession:
        raise NotImplementedError

    async def update_instructions(self, text: str) -> None:
        self.agent.instructions = text
        async with self.control:
            await self.backend_session.update_instructions(text)

    async def update_tools(self, tools: Sequence[FunctionTool | Callable[..., Any]]) -> None:
        """Replace the tools the model may call, from the next reply on."""
        built = [t if isinstance(t, FunctionTool) else build_tool(t) for t in tools]
        names = [t.name for t in built]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate tool names: {sorted(names)}")
        await self._set_tools(built)

    async def _set_tools(self, tools: list[FunctionTool]) -> None:
        """Also where an MCP server's changed tool list arrives mid-call."""
        self._tool_list = tools
        self.tools.set_tools(tools)
        if self._backend is not None:
            async with self.control:
                await self._backend.update_tools(tools)

    async def use_tools_of(self, agent: Agent) -> list[FunctionTool]:
        """Stop the tool providers (MCP servers) of the agent before, start ``agent``'s."""
        await self._providers.aclose()
        self._providers = ProviderTools(agent.mcp_servers, agent.tools, self._set_tools)
        self._tool_list = await self._providers.start()
        self.tools.set_tools(self._tool_list)
        return list(self._tool_list)

    async def update_options(self, **changes: Any) -> None:
        """Change what the backend can change live (see `BackendSession.update_options`)."""
        async with self.control:
            await self.backend_session.update_options(**changes)
