"""`ToolThreads`: where sync tools run, apart from the event loop's default executor.

A sync tool that hangs keeps its thread even after its timeout (threads cannot be
killed). On the loop's default executor a handful of those would starve everything
else that needs it, ``getaddrinfo`` included. Here they only use up this bounded
budget, and a full one refuses new calls at once with a readable error instead of
queueing them behind threads that may never come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import threading
from collections.abc import Callable
from typing import Any

from .errors import ToolError

__all__ = ["DEFAULT_TOOL_THREADS", "ToolThreads", "default_tool_threads"]

#: Sync tool calls running at once in one process (hung ones included).
DEFAULT_TOOL_THREADS = 32


class ToolThreads:
    """At most ``max_workers`` sync tool calls at once, each on its own daemon thread.

    A call counts until its thread really returns, so tools stuck past their timeout
    keep their place; daemon threads mean a stuck tool never blocks interpreter exit.
    """

    def __init__(self, max_workers: int = DEFAULT_TOOL_THREADS) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.max_workers = max_workers
        self._lock = threading.Lock()
        self._busy = 0

    @property
    def busy(self) -> int:
        """Threads running a tool now, including ones whose caller already timed out."""
        return self._busy

    async def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` on a new thread; raises `ToolError` when ``max_workers`` are taken."""
        with self._lock:
            if self._busy >= self.max_workers:
                raise ToolError(
                    f"all {self.max_workers} tool threads are busy with calls that have not "
                    "returned; try again later"
                )
            self._busy += 1
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)

        def settle(ok: bool, value: Any) -> None:
            if future.done():
                return  # the caller gave up (timeout, cancel): the result has nowhere to go
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

        def work() -> None:
            try:
                result, ok = call(), True
            except BaseException as e:  # handed to the awaiting task, not lost in the thread
                result, ok = e, False
            finally:
                with self._lock:
                    self._busy -= 1
            with contextlib.suppress(RuntimeError):  # the loop closed while the tool ran
                loop.call_soon_threadsafe(settle, ok, result)

        try:
            threading.Thread(target=work, name="duplex-tool", daemon=True).start()
        except BaseException:
            with self._lock:
                self._busy -= 1
            raise
        return await future


_default: ToolThreads | None = None


def default_tool_threads() -> ToolThreads:
    """The process-wide pool every tool uses unless given its own."""
    global _default
    if _default is None:
        _default = ToolThreads()
    return _default
