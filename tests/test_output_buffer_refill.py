"""A full output buffer wakes its writer at half capacity, and the writer refills it at once.

One writer wake-up per half buffer instead of one per pulled frame; the audio pulled
is still exactly what was written, in order, with no gap while the writer keeps up.
"""

from __future__ import annotations

import asyncio

import numpy as np

from duplex.agents.audio import AudioFrame
from duplex.agents.output_buffer import OutputBuffer

RATE = 48000
FRAME = 960  # 20 ms


def _frame(k: int) -> AudioFrame:
    return AudioFrame((np.arange(k * FRAME, (k + 1) * FRAME) % 30000).astype(np.int16), RATE)


async def _settled() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_full_buffer_wakes_its_writer_at_half_and_is_refilled_whole() -> None:
    buf = OutputBuffer(RATE, capacity_ms=200.0)
    total = 30

    async def writer() -> None:
        for k in range(total):
            await buf.write(_frame(k))

    task = asyncio.create_task(writer())
    await _settled()
    assert buf.queued_ms == 200.0  # filled, then waiting for room
    pulled = []
    levels = []
    for _ in range(total):
        pulled.append(buf.pull(FRAME)[:, 0])
        await _settled()
        levels.append(buf.queued_ms)
    # Down to half before the writer runs again, then back to full in one go.
    assert levels[:5] == [180.0, 160.0, 140.0, 120.0, 200.0]
    assert levels[5:10] == [180.0, 160.0, 140.0, 120.0, 200.0]
    assert min(levels[:20]) >= 100.0  # never below half while the writer keeps up
    await task
    np.testing.assert_array_equal(
        np.concatenate(pulled), np.concatenate([_frame(k).data[:, 0] for k in range(total)])
    )


async def test_clear_wakes_a_waiting_writer_and_drops_its_frame() -> None:
    buf = OutputBuffer(RATE, capacity_ms=40.0)
    await buf.write(_frame(0))
    await buf.write(_frame(1))
    waiting = asyncio.create_task(buf.write(_frame(2)))
    await _settled()
    assert not waiting.done()
    assert buf.clear() == 40.0
    await asyncio.wait_for(waiting, 5)
    assert buf.queued_ms == 0.0  # the waiting frame belonged to the cut reply
