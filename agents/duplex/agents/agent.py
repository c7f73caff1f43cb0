"""`Agent`: the developer's class: instructions plus tools (its `@function_tool` methods)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .handoff import ChatContextPolicy
from .tool_provider import ToolProvider
from .tools import FunctionTool, build_tool, find_tools
from .vad import TurnOptions

if TYPE_CHECKING:
    from .session import AgentSession


class Agent:
    """Subclass it; set ``instructions`` and decorate methods with `@function_tool`."""

    instructions: str = "You are a helpful voice assistant. Keep answers short."
    #: Interruption options for this agent; None falls back to the session's setting.
    allow_interruptions: bool | None = None
    min_interruption_ms: float | None = None
    resume_false_interruption: bool | None = None
    #: Shown to the caller's UI on a handoff; defaults to the class name.
    name: str | None = None
    #: What a handoff to this agent keeps of the conversation (None: everything).
    chat_ctx: ChatContextPolicy | None = None
    #: Backend options this agent wants from its handoff on, e.g. ``{"voice": "cedar"}``.
    backend_options: Mapping[str, Any] | None = None
    #: Turn detection for this agent; None keeps the session's.
    turn: TurnOptions | None = None

    def __init__(
        self,
        *,
        instructions: str | None = None,
        tools: Sequence[Callable[..., Any] | FunctionTool] = (),
        allow_interruptions: bool | None = None,
        min_interruption_ms: float | None = None,
        resume_false_interruption: bool | None = None,
        mcp_servers: Sequence[ToolProvider] = (),
        name: str | None = None,
        chat_ctx: ChatContextPolicy | None = None,
        backend_options: Mapping[str, Any] | None = None,
        turn: TurnOptions | None = None,
    ) -> None:
        if instructions is not None:
            self.instructions = instructions
        if name is not None:
            self.name = name
        if chat_ctx is not None:
            self.chat_ctx = chat_ctx
        if backend_options is not None:
            self.backend_options = dict(backend_options)
        if turn is not None:
            self.turn = turn
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

    @property
    def label(self) -> str:
        return self.name or type(self).__name__

    async def on_exit(self, session: AgentSession) -> None:
        """Called when this agent hands the call to another, before the other's `on_enter`."""

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
