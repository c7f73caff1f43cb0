"""Closing a playout ends its task even when the output swallows a cancellation.

Python 3.11's `asyncio.wait_for` returns instead of raising when its inner wait finishes
as it is cancelled; the phone output's `wait_drained` used it, and a call closing does
both at once, so the session's close waited forever (a drained worker never exited).
"""

from __future__ import annotations

import asyncio

from duplex.agents.playout import Playout
from duplex.agents.testing.memory import MemoryAudioOutput, tone


class SwallowsOneCancel(MemoryAudioOutput):
    """An output whose ``wait_drained`` loses the first cancel, as 3.11's ``wait_for`` can."""

    def __init__(self) -> None:
        super().__init__(24000, 1, "auto")
        self.waiting = asyncio.Event()

    async def wait_drained(self) -> None:
        self.waiting.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return  # swallowed: the caller carries on as if drained


async def test_aclose_ends_the_task_although_a_cancel_was_swallowed() -> None:
    output = SwallowsOneCancel()
    playout = Playout(output, 24000)
    playout.start()
    playout.push("item_1", tone(40, 24000))
    playout.end_of_response()
    await asyncio.wait_for(output.waiting.wait(), 5)
    closing = asyncio.ensure_future(playout.aclose())
    # Not wait_for: cancelling the close on a timeout would cancel the task a second time.
    done, _ = await asyncio.wait({closing}, timeout=5)
    assert closing in done
