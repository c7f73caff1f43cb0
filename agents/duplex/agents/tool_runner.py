"""Runs the model's tool calls: concurrently, never losing an output, each output once.

Every failure (unknown tool, invalid arguments, exception, timeout) becomes an
output the model can read, so the conversation always has an answer per call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .conversation import FunctionCall, FunctionCallOutput
from .errors import ToolArgumentsError, ToolError
from .handoff import handoff_target
from .tools import FunctionTool

if TYPE_CHECKING:
    from .agent import Agent

logger = logging.getLogger("duplex.agents.tools")

OutputSink = Callable[[FunctionCall, FunctionCallOutput, float], Awaitable[None]]
#: Receives the agent a tool returned, after that call's output was recorded.
HandoffSink = Callable[[FunctionCall, "Agent"], Awaitable[None]]


@dataclass
class ToolBatch:
    """The calls of one response; the follow-up reply waits for all of them."""

    response_id: str
    calls: dict[str, asyncio.Task[FunctionCallOutput]] = field(default_factory=dict)
    response_done: bool = False
    interrupted: bool = False

    @property
    def finished(self) -> bool:
        return self.response_done and all(t.done() for t in self.calls.values())


class ToolRunner:
    """Executes calls and hands each output to ``sink`` exactly once, interrupted or not."""

    def __init__(
        self,
        tools: Sequence[FunctionTool],
        sink: OutputSink,
        on_handoff: HandoffSink | None = None,
    ) -> None:
        self._tools = {t.name: t for t in tools}
        self._sink = sink
        self._on_handoff = on_handoff
        self._batches: dict[str, ToolBatch] = {}
        self._seen_calls: set[str] = set()

    def set_tools(self, tools: Sequence[FunctionTool]) -> None:
        self._tools = {t.name: t for t in tools}

    def batch(self, response_id: str) -> ToolBatch:
        if response_id not in self._batches:
            self._batches[response_id] = ToolBatch(response_id)
        return self._batches[response_id]

    def find(self, response_id: str) -> ToolBatch | None:
        return self._batches.get(response_id)

    def pop_batch(self, response_id: str) -> ToolBatch | None:
        return self._batches.pop(response_id, None)

    @property
    def running(self) -> int:
        return sum(1 for b in self._batches.values() for t in b.calls.values() if not t.done())

    def submit(
        self, response_id: str, call: FunctionCall
    ) -> asyncio.Task[FunctionCallOutput] | None:
        """Start a call; a call id seen before is ignored (a replayed event must not run twice)."""
        if call.call_id in self._seen_calls:
            logger.warning("ignoring repeated tool call %s", call.call_id)
            return None
        self._seen_calls.add(call.call_id)
        task = asyncio.create_task(self._run(call), name=f"duplex-tool-{call.name}")
        self.batch(response_id).calls[call.call_id] = task
        return task

    async def wait_batch(self, response_id: str) -> list[FunctionCallOutput]:
        batch = self._batches.get(response_id)
        if batch is None:
            return []
        return list(await asyncio.gather(*batch.calls.values()))

    async def aclose(self) -> None:
        """Let running tools finish so their outputs are not lost (they may have side effects)."""
        tasks = [t for b in self._batches.values() for t in b.calls.values() if not t.done()]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, call: FunctionCall) -> FunctionCallOutput:
        started = time.monotonic()
        output, next_agent = await self._execute(call)
        try:
            await self._sink(call, output, time.monotonic() - started)
        except Exception:
            logger.exception("could not record output of tool call %s", call.call_id)
        if next_agent is not None and self._on_handoff is not None:
            # Before the batch counts as finished, so the follow-up reply is the new agent's.
            try:
                await self._on_handoff(call, next_agent)
            except Exception:
                logger.exception("handoff requested by tool call %s failed", call.call_id)
        return output

    async def _execute(self, call: FunctionCall) -> tuple[FunctionCallOutput, Agent | None]:
        """The call's output, and the agent it hands the call to, if its tool returned one."""

        def error(text: str) -> tuple[FunctionCallOutput, None]:
            failed = FunctionCallOutput(
                call.call_id, f"error: {text}", is_error=True, name=call.name
            )
            return failed, None

        tool = self._tools.get(call.name)
        if tool is None:
            return error(f"unknown tool {call.name!r}; available: {sorted(self._tools)}")
        try:
            args = tool.validate(call.arguments)
        except ToolArgumentsError as e:
            return error(str(e))
        try:
            result = await tool.invoke(args)
        except asyncio.TimeoutError:
            return error(f"{call.name} timed out after {tool.timeout:g} s")
        except ToolError as e:
            return error(str(e))
        except asyncio.CancelledError:
            raise
        except Exception as e:
            logger.exception("tool %s raised", call.name)
            return error(f"{call.name} failed: {type(e).__name__}: {e}")
        next_agent, result = handoff_target(result)
        return FunctionCallOutput(call.call_id, _to_text(result), name=call.name), next_agent


def _to_text(result: Any) -> str:
    if result is None:
        return "done"
    if isinstance(result, str):
        return result
    try:
        return json.dumps(result, default=str)
    except (TypeError, ValueError):
        return str(result)
