"""Playout writes a frame straight from `push` while its task is idle; order and stops hold.

Against the core output buffer under the memory transport's manual clock (the
caller's speaker): what the caller hears is measured there, never in Playout.
"""

from __future__ import annotations

import asyncio

import numpy as np

from duplex.agents.audio import AudioFrame
from duplex.agents.playout import Playout
from duplex.agents.testing.memory import MemoryAudioOutput

RATE = 48000
FRAME = 960  # 20 ms


def _ramp(start: int, frames: int) -> AudioFrame:
    """Distinct samples, so any loss, repeat or reordering shows."""
    data = (np.arange(start, start + frames * FRAME) % 30000).astype(np.int16)
    return AudioFrame(data, RATE)


async def _settled() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_frame_reaches_the_output_within_push_while_playout_is_idle() -> None:
    out = MemoryAudioOutput(RATE, 1, "manual", buffer_frames=5)
    started: list[str] = []
    playout = Playout(out, RATE, on_item_started=lambda item, _at: started.append(item))
    playout.start()
    await _settled()  # the task is up and waiting for audio
    playout.push("item_1", _ramp(0, 2))
    # No await in between: the frames are in the output and the item counts as started.
    assert out.buffer.queued_ms == 40.0
    assert started == ["item_1"] and playout.written_ms("item_1") == 40.0
    await playout.aclose()


async def test_frames_keep_their_order_through_a_full_output() -> None:
    # A 2-frame output: most writes wait for the clock, some go straight through.
    out = MemoryAudioOutput(RATE, 1, "manual", buffer_frames=2)
    playout = Playout(out, RATE)
    playout.start()
    await _settled()
    sent = []
    pos = 0
    for k in range(12):
        frames = 1 + k % 3
        chunk = _ramp(pos, frames)
        pos += frames * FRAME
        sent.append(chunk.data[:, 0])
        playout.push("item_1", chunk)
        await out.play(20.0)  # the speaker plays one frame per push, so writes back up
    playout.end_of_response()
    await out.play(pos / RATE * 1000 - out.played_ms)
    heard = out.audio()
    assert heard is not None
    np.testing.assert_array_equal(heard.data[:, 0], np.concatenate(sent))
    await playout.aclose()


async def test_stop_drops_a_waiting_write_and_the_next_reply_plays_whole() -> None:
    out = MemoryAudioOutput(RATE, 1, "manual", buffer_frames=1)
    idle = asyncio.Event()
    playout = Playout(out, RATE, on_idle=idle.set)
    playout.start()
    await _settled()
    playout.push("cut", _ramp(0, 4))  # one frame in the output, the rest waits
    await _settled()
    assert playout.active
    await playout.stop()
    assert out.buffer.queued_ms == 0.0
    playout.push("next", _ramp(5000, 3))
    playout.end_of_response()
    await out.play(60.0)
    heard = out.audio()
    assert heard is not None
    np.testing.assert_array_equal(heard.data[:, 0], _ramp(5000, 3).data[:, 0])
    assert playout.heard_ms("cut") == 0.0 and playout.heard_ms("next") == 60.0
    await asyncio.wait_for(idle.wait(), 5)  # the stopped reply left nothing pending
    assert not playout.active
    await playout.aclose()
