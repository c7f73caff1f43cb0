"""Run a coroutine up to its first real wait without a task, and finish it later in one.

A hot path (a frame per 20 ms per call) that usually completes without waiting —
an output with room — pays for a task switch on every frame when it is always
handed to a task. `start` drives the coroutine by hand as a task would; only when
it suspends does someone need to `Suspended.finish` it (or `Suspended.close` it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class Suspended:
    """A coroutine `start` stepped until it waited; ``waiting_on`` is what it waits on
    (a future, or None for a bare yield such as ``asyncio.sleep(0)``)."""

    __slots__ = ("coro", "waiting_on")

    def __init__(self, coro: Coroutine[Any, Any, None], waiting_on: Any) -> None:
        self.coro = coro
        self.waiting_on = waiting_on

    async def finish(self) -> None:
        """Drive it to its end, as a Task does: once the future is done, sending None
        resumes the coroutine, which reads the result (or exception) itself.

        The future is awaited here directly (one wake-up, as the Task would have had);
        its outcome is the coroutine's to read, so it is not raised here. A cancel of
        the task running this cancels that future, as it would have in a Task; a cancel
        that arrives once the future is done is thrown into the coroutine instead.
        """
        coro, waiting_on = self.coro, self.waiting_on
        try:
            while True:
                if waiting_on is None:
                    await asyncio.sleep(0)
                else:
                    try:
                        await waiting_on
                    except asyncio.CancelledError:
                        if not waiting_on.cancelled():
                            coro.throw(asyncio.CancelledError())  # lets it clean up; raises
                            raise
                    except Exception:  # its outcome: the coroutine reads it itself
                        pass
                waiting_on = coro.send(None)
                _taken(waiting_on)
        except StopIteration:
            return

    def close(self) -> None:
        """Abandon it (its `finally` blocks run)."""
        self.coro.close()


def start(coro: Coroutine[Any, Any, None]) -> Suspended | None:
    """Step ``coro``: None when it finished without waiting, else the `Suspended` to
    finish. Exceptions it raises before its first wait propagate."""
    try:
        waiting_on = coro.send(None)
    except StopIteration:
        return None
    _taken(waiting_on)
    return Suspended(coro, waiting_on)


def _taken(fut: Any) -> None:
    """What a Task does with a future its coroutine yields: clear the "blocking" mark,
    or any other coroutine awaiting the same future fails ("await wasn't used with future").
    """
    if getattr(fut, "_asyncio_future_blocking", None):
        fut._asyncio_future_blocking = False
