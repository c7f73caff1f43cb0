"""`ToolProvider`: tools that come from something with a lifetime (an MCP server, a registry).

An `Agent` lists providers next to its `@function_tool` methods; the session starts them
with the call, adds their tools to the agent's, follows their changes and stops them when
the call ends. The core knows only this interface, so a provider plugin never touches the
session and the session never imports a plugin.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence

from .errors import ToolProviderError
from .tools import FunctionTool

#: Receives a provider's whole new tool list when it changes mid-call.
ToolsChangedHandler = Callable[[Sequence[FunctionTool]], Awaitable[None]]


class ToolProvider(ABC):
    """Started once per session; its tools are advertised like `@function_tool`s."""

    #: Shown in errors and logs.
    name: str = "tools"

    def __init__(self) -> None:
        self._on_change: ToolsChangedHandler | None = None

    @abstractmethod
    async def start(self) -> list[FunctionTool]:
        """Connect (or spawn) and list the tools; raise `ToolProviderError` when it cannot."""

    @abstractmethod
    async def aclose(self) -> None:
        """Stop; calls still running end with an error output, never a hang."""

    def set_change_handler(self, handler: ToolsChangedHandler | None) -> None:
        """Where the provider reports a new tool list (an MCP ``tools/list_changed``)."""
        self._on_change = handler

    async def tools_changed(self, tools: Sequence[FunctionTool]) -> None:
        """Called by implementations; forwards to the session's handler, if any."""
        if self._on_change is not None:
            await self._on_change(tools)


class ProviderTools:
    """The providers of one session: started together, their tools merged with the agent's."""

    def __init__(
        self,
        providers: Sequence[ToolProvider],
        own_tools: Sequence[FunctionTool],
        on_change: Callable[[list[FunctionTool]], Awaitable[None]],
    ) -> None:
        self._providers = list(providers)
        self._own = list(own_tools)
        self._by_provider: dict[int, list[FunctionTool]] = {}
        self._on_change = on_change
        self._started: list[ToolProvider] = []

    @property
    def tools(self) -> list[FunctionTool]:
        merged = list(self._own)
        for i in range(len(self._providers)):
            merged.extend(self._by_provider.get(i, []))
        return merged

    async def start(self) -> list[FunctionTool]:
        """Start every provider at once; one that fails stops the others and raises."""
        results = await asyncio.gather(
            *(self._start_one(i, p) for i, p in enumerate(self._providers)),
            return_exceptions=True,
        )
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            await self.aclose()
            if isinstance(failure, ToolProviderError):
                raise failure
            raise ToolProviderError(f"a tool provider could not start: {failure}") from failure
        tools = self.tools
        _check_unique(tools)
        return tools

    async def aclose(self) -> None:
        started, self._started = self._started, []
        await asyncio.gather(*(p.aclose() for p in started), return_exceptions=True)

    async def _start_one(self, index: int, provider: ToolProvider) -> None:
        self._started.append(provider)
        self._by_provider[index] = list(await provider.start())

        async def changed(tools: Sequence[FunctionTool]) -> None:
            self._by_provider[index] = list(tools)
            merged = self.tools
            _check_unique(merged)
            await self._on_change(merged)

        provider.set_change_handler(changed)


def _check_unique(tools: Sequence[FunctionTool]) -> None:
    names = [t.name for t in tools]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ToolProviderError(f"two tools share a name: {dupes} (set a tool_prefix)")
