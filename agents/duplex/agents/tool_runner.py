"""Runs the model's tool calls: concurrently, never losing an output, each output once.

Every failure (unknown tool, hostile or invalid arguments, exception, timeout, a
result that cannot be turned into text) becomes an output the model can read, so
the conversation always has an answer per call. Closing is bounded: tools still
running after a grace period are cancelled and answered with an error.
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
from .tool_threads import ToolThreads
from .tools import FunctionTool

if TYPE_CHECKING:
    from .agent import Agent

logger = logging.getLogger("duplex.agents.tools")

OutputSink = Callable[[FunctionCall, FunctionCallOutput, float], Awaitable[None]]
#: Told about a failure the runner could not turn into an output (so it never goes unseen).
FailureSink = Callable[[str, BaseException], None]
#: Receives the agent a tool returned, after that call's output was recorded.
HandoffSink = Callable[[FunctionCall, "Agent"], Awaitable[None]]

#: Seconds `ToolRunner.aclose` lets running tools finish before cancelling them.
CLOSE_GRACE_S = 5.0
#: Seconds a cancelled call has to record its error output while closing.
CLOSE_RECORD_S = 2.0
#: Outputs longer than this (characters) are cut, with a note saying so.
MAX_OUTPUT_CHARS = 100_000


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
        *,
        on_handoff: HandoffSink | None = None,
        on_failure: FailureSink | None = None,
        threads: ToolThreads | None = None,
        close_grace_s: float | None = None,
    ) -> None:
        self._tools = {t.name: t for t in tools}
        self._sink = sink
        self._on_failure = on_failure
        self._on_handoff = on_handoff
        self._handoffs: dict[str, Agent] = {}  # call id -> the agent its tool returned
        self._threads = threads
        #: None: `CLOSE_GRACE_S` at close time.
        self.close_grace_s = close_grace_s
        self._batches: dict[str, ToolBatch] = {}
        self._seen_calls: set[str] = set()
        self._closing = False

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
        task = asyncio.create_task(self._run(call), name=f"duplex-tool-{call.name[:64]}")
        task.add_done_callback(self._supervise)
        self.batch(response_id).calls[call.call_id] = task
        return task

    def _supervise(self, task: asyncio.Task[FunctionCallOutput]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        assert exc is not None
        logger.error("tool task %s failed: %r", task.get_name(), exc)
        self._fail(task.get_name(), exc)

    def _fail(self, name: str, exc: BaseException) -> None:
        if self._on_failure is not None:
            try:
                self._on_failure(name, exc)
            except Exception:
                logger.exception("reporting a tool failure failed")

    async def wait_batch(self, response_id: str) -> list[FunctionCallOutput]:
        batch = self._batches.get(response_id)
        if batch is None:
            return []
        return list(await asyncio.gather(*batch.calls.values()))

    async def aclose(self) -> None:
        """Let running tools finish (they may have side effects), for a bounded time.

        Tools still running after `close_grace_s` are cancelled; each gets an error
        output. A sync tool's thread cannot be stopped: it finishes in the background.
        """
        self._closing = True
        tasks = [t for b in self._batches.values() for t in b.calls.values() if not t.done()]
        if not tasks:
            return
        grace = CLOSE_GRACE_S if self.close_grace_s is None else self.close_grace_s
        _, pending = await asyncio.wait(tasks, timeout=grace)
        if not pending:
            return
        logger.warning("cancelling %d tool call(s) still running at close", len(pending))
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=CLOSE_RECORD_S + 1.0)

    async def _run(self, call: FunctionCall) -> FunctionCallOutput:
        started = time.monotonic()
        try:
            output = await self._execute(call)
        except asyncio.CancelledError:
            if not self._closing:
                raise
            output = _error(call, "cancelled: the session closed before the tool finished")
            await self._record(call, output, started, timeout=CLOSE_RECORD_S)
            return output
        await self._record(call, output, started)
        next_agent = self._handoffs.pop(call.call_id, None)
        if next_agent is not None and self._on_handoff is not None:
            # Before the batch counts as finished, so the follow-up reply is the new agent's.
            try:
                await self._on_handoff(call, next_agent)
            except Exception as e:
                logger.exception("handoff requested by tool call %s failed", call.call_id)
                self._fail(f"duplex-handoff-{call.name[:64]}", e)
        return output

    async def _record(
        self,
        call: FunctionCall,
        output: FunctionCallOutput,
        started: float,
        timeout: float | None = None,
    ) -> None:
        try:
            await asyncio.wait_for(self._sink(call, output, time.monotonic() - started), timeout)
        except Exception as e:
            logger.exception("could not record output of tool call %s", call.call_id)
            self._fail(f"duplex-tool-{call.name[:64]}", e)

    async def _execute(self, call: FunctionCall) -> FunctionCallOutput:
        try:
            return await self._attempt(call)
        except Exception as e:  # whatever escapes (RecursionError, ...) still answers the call
            logger.exception("tool call %s failed unexpectedly", call.call_id)
            return _error(call, f"{call.name} failed: {_describe(e)}")

    async def _attempt(self, call: FunctionCall) -> FunctionCallOutput:
        tool = self._tools.get(call.name)
        if tool is None:
            known = sorted(self._tools)
            return _error(call, f"unknown tool {call.name[:64]!r}; available: {known}")
        try:
            args = tool.validate(call.arguments)
        except ToolArgumentsError as e:
            return _error(call, _safe_str(e))
        try:
            result = await tool.invoke(args, threads=self._threads)
        except asyncio.TimeoutError:
            return _error(call, f"{call.name} timed out after {tool.timeout:g} s")
        except ToolError as e:
            return _error(call, _safe_str(e))
        except asyncio.CancelledError:
            raise
        except Exception as e:
            logger.exception("tool %s raised", call.name)
            return _error(call, f"{call.name} failed: {_describe(e)}")
        next_agent, result = handoff_target(result)
        if next_agent is not None:
            self._handoffs[call.call_id] = next_agent
        try:
            text = _to_text(result)
        except Exception as e:
            logger.exception("the result of tool %s cannot be made text", call.name)
            why = _describe(e)
            return _error(call, f"{call.name} returned a result that cannot be shown: {why}")
        return FunctionCallOutput(call.call_id, text, name=call.name)


def _error(call: FunctionCall, text: str) -> FunctionCallOutput:
    return FunctionCallOutput(call.call_id, f"error: {_cap(text)}", is_error=True, name=call.name)


def _safe_str(value: object) -> str:
    """``str(value)``, or its type's name when its ``__str__`` itself fails."""
    try:
        return str(value)
    except Exception:
        return f"<{type(value).__name__} that cannot be shown>"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_safe_str(exc)}"


def _cap(text: str) -> str:
    if len(text) <= MAX_OUTPUT_CHARS:
        return text
    return text[:MAX_OUTPUT_CHARS] + f" [cut: {len(text) - MAX_OUTPUT_CHARS} more characters]"


def _to_text(result: Any) -> str:
    """The output the model reads; raises when ``result`` cannot be turned into text."""
    if result is None:
        return "done"
    if isinstance(result, str):
        return _cap(result)
    try:
        return _cap(json.dumps(result, default=str))
    except (TypeError, ValueError, RecursionError):
        return _cap(str(result))
