"""The benchmark's speaker: a stop is recorded whenever an unfinished reply is stopped."""

from __future__ import annotations

import asyncio

from bench.clock import FRAME_S, LatenessHistogram, PlayoutClock


async def ran_dry(clock: PlayoutClock) -> None:
    await clock.wait_drained()
    async with asyncio.timeout(5):
        while clock.playing:  # noqa: ASYNC110 - the clock has no "ran dry" event
            await asyncio.sleep(FRAME_S / 4)


def assert_stopped_once(clock: PlayoutClock) -> None:
    """One stop recorded, and the reply's segment marked stopped."""
    assert len(clock.stops) == 1
    seg = clock.current
    assert seg is not None and seg.stopped_at is not None


async def test_a_clear_while_the_reply_is_playing_is_a_stop() -> None:
    clock = PlayoutClock(LatenessHistogram())
    for _ in range(3):
        clock.write()
    clock.clear()
    assert_stopped_once(clock)


async def test_a_clear_during_an_underrun_mid_reply_is_a_stop() -> None:
    # Under load the framework's next frame is late, the speaker runs dry, and the
    # barge-in's clear lands in that gap: the reply was stopped all the same.
    clock = PlayoutClock(LatenessHistogram())
    clock.write()
    clock.write()
    await ran_dry(clock)
    assert not clock.playing
    clock.clear()
    assert_stopped_once(clock)


async def test_a_clear_after_the_whole_reply_played_is_not_a_stop() -> None:
    clock = PlayoutClock(LatenessHistogram())
    clock.write(2.45)  # the whole reply (2.5 s, less the last frames' slack) in one write
    await ran_dry(clock)
    clock.clear()
    assert clock.stops == []
