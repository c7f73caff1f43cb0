"""`ToolThreads`: where sync tools run, apart from the event loop's default executor.

A sync tool that hangs keeps its thread even after its timeout (threads cannot be
killed). On the loop's default executor a handful of those would starve everything
else that needs it, ``getaddrinfo`` included. Here they only use up this pool, and
a full pool refuses new calls at once with a readable error instead of queueing
them behind threads that may never come back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
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
    """A bounded thread pool that counts calls until their thread really returns."""

    def __init__(self, max_workers: int = DEFAULT_TOOL_THREADS) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.max_workers = max_workers
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._busy = 0

    @property
    def busy(self) -> int:
        """Threads running a tool now, including ones whose caller already timed out."""
        return self._busy

    async def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` in a pool thread; raises `ToolError` when every thread is taken."""
        with self._lock:
            if self._busy >= self.max_workers:
                raise ToolError(
                    f"all {self.max_workers} tool threads are busy with calls that have not "
                    "returned; try again later"
                )
            self._busy += 1
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    self.max_workers, thread_name_prefix="duplex-tool"
                )
            pool = self._pool
        ctx = contextvars.copy_context()
        call = functools.partial(ctx.run, fn, *args, **kwargs)

        def release() -> None:
            with self._lock:
                self._busy -= 1

        def work() -> Any:
            try:
                return call()
            finally:
                release()

        future = pool.submit(work)
        # A call cancelled before its thread started never runs `work`: release it here.
        future.add_done_callback(lambda f: release() if f.cancelled() else None)
        return await asyncio.wrap_future(future)

    def shutdown(self) -> None:
        """Stop the pool (threads still running a tool finish in the background)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


_default: ToolThreads | None = None


def default_tool_threads() -> ToolThreads:
    """The process-wide pool every tool uses unless given its own."""
    global _default
    if _default is None:
        _default = ToolThreads()
    return _default
