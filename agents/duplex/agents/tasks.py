"""The session's background tasks: named, tracked, and all cancelled together at close.

A task that fails is reported, never silently dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

logger = logging.getLogger("duplex.agents.session")
T = TypeVar("T")


class TaskSet:
    def __init__(self, on_failure: Callable[[str, BaseException], None]) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._on_failure = on_failure

    def spawn(self, coro: Coroutine[Any, Any, T] | Awaitable[T], name: str) -> asyncio.Task[T]:
        task: asyncio.Task[T] = asyncio.ensure_future(coro)
        task.set_name(f"duplex-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            assert exc is not None
            logger.error("session task %s failed: %r", task.get_name(), exc)
            self._on_failure(task.get_name(), exc)

    async def cancel_all(self) -> None:
        """Cancel every task but the caller's own, and wait for them to end."""
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def __len__(self) -> int:
        return len(self._tasks)
