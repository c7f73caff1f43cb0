"""The one paced output buffer every transport plays from."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from duplex.agents import AudioFormatError
from duplex.agents.output_buffer import OutputBuffer
from duplex.agents.testing import tone

RATE = 16000


def ms(n: float) -> int:
    return round(n * RATE / 1000)


async def test_write_waits_for_room_and_pull_makes_it() -> None:
    buf = OutputBuffer(RATE, capacity_ms=40)
    await buf.write(tone(40, RATE))
    writer = asyncio.ensure_future(buf.write(tone(20, RATE)))
    await asyncio.sleep(0.01)
    assert not writer.done()  # full: the session may not run ahead of the caller
    out = buf.pull(ms(20))
    assert out.shape == (ms(20), 1) and np.abs(out).max() > 0
    await asyncio.wait_for(writer, 1)
    assert buf.written_ms == 60 and buf.heard_ms == 20 and buf.buffered_ms == 40


async def test_pull_pads_with_silence_and_counts_only_audio() -> None:
    buf = OutputBuffer(RATE, capacity_ms=100)
    await buf.write(tone(10, RATE))
    out = buf.pull(ms(20))
    assert np.abs(out[: ms(10)]).max() > 0 and not out[ms(10) :].any()
    assert buf.heard_ms == 10 and buf.drained.is_set()


async def test_clear_drops_the_unheard_and_rewinds_the_axis() -> None:
    buf = OutputBuffer(RATE, capacity_ms=100)
    await buf.write(tone(100, RATE))
    buf.pull(ms(30))
    blocked = asyncio.ensure_future(buf.write(tone(40, RATE)))
    await asyncio.sleep(0)
    assert buf.clear() == pytest.approx(70)
    await asyncio.wait_for(blocked, 1)  # the waiting write belonged to the cut reply
    assert buf.written_ms == buf.heard_ms == 30 and buf.buffered_ms == 0
    assert buf.dropped_ms == pytest.approx(70) and buf.drained.is_set()


async def test_pause_holds_playback_where_it_is_and_resume_continues() -> None:
    buf = OutputBuffer(RATE, capacity_ms=100)
    audio = tone(60, RATE)
    await buf.write(audio)
    first = buf.pull(ms(20))
    buf.pause()
    assert not buf.pull(ms(20)).any() and buf.heard_ms == 20  # silence, nothing consumed
    assert buf.take(ms(20)) is None
    buf.resume()
    rest = buf.pull(ms(40))
    assert np.array_equal(np.concatenate([first, rest]), audio.data)


async def test_a_sink_that_knows_better_reports_what_was_heard() -> None:
    buf = OutputBuffer(RATE, capacity_ms=100, sink_reports=True)
    await buf.write(tone(60, RATE))
    buf.pull(ms(60))  # handed to, say, a phone provider
    assert buf.heard_ms == 0 and not buf.drained.is_set()
    buf.report_played(25)  # its mark came back
    assert buf.heard_ms == 25
    buf.report_played(500)  # never beyond what was handed over
    assert buf.heard_ms == 60 and buf.drained.is_set()


async def test_in_flight_is_what_a_reporting_sink_holds_and_clear_returns_it() -> None:
    buf = OutputBuffer(RATE, capacity_ms=100, sink_reports=True)
    await buf.write(tone(80, RATE))
    buf.pull(ms(60))
    buf.report_played(20)
    assert (buf.in_flight_ms, buf.queued_ms, buf.buffered_ms) == (40, 20, 60)
    assert buf.clear() == 60  # the sink's 40 ms and the 20 ms never pulled
    assert (buf.in_flight_ms, buf.heard_ms, buf.pulled_ms) == (0, 20, 20)
    await buf.write(tone(20, RATE))
    buf.pull(ms(20))
    assert buf.in_flight_ms == 20  # the axis went on from what was heard


async def test_pull_from_a_device_thread_wakes_the_writer() -> None:
    buf = OutputBuffer(RATE, capacity_ms=20)
    await buf.write(tone(20, RATE))
    writer = asyncio.ensure_future(buf.write(tone(20, RATE)))
    await asyncio.sleep(0)
    t = threading.Thread(target=buf.pull, args=(ms(20),))  # like a sound card callback
    t.start()
    t.join()
    await asyncio.wait_for(writer, 1)
    assert buf.written_ms == 40


async def test_format_mismatch_is_a_clear_error() -> None:
    buf = OutputBuffer(RATE)
    with pytest.raises(AudioFormatError, match="16000"):
        await buf.write(tone(20, 48000))
    with pytest.raises(AudioFormatError):
        OutputBuffer(RATE, capacity_ms=0)
