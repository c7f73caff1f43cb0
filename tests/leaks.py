"""Finding asyncio tasks a call left behind (shared by the transport tests)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any


def tasks_touching(objects: Sequence[object]) -> list[Any]:
    """Live asyncio tasks whose coroutine chain holds one of ``objects`` (as self or a local)."""
    wanted = {id(o) for o in objects}
    found = []
    for task in asyncio.all_tasks():
        if task.done() or task is asyncio.current_task():
            continue
        coro: Any = task.get_coro()
        while coro is not None:
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
            if frame is not None and any(id(v) in wanted for v in frame.f_locals.values()):
                found.append(task)
                break
            coro = getattr(coro, "cr_await", None)
    return found
