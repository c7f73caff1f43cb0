"""Audio both ways through the SDK's native pipeline: the caller's mic in, the agent's track out."""

from __future__ import annotations

import asyncio
import time

import pytest

from duplex.agents.audio import AudioFrame
from duplex.agents.errors import AudioFormatError
from duplex.plugins.livekit import RoomAudioOutput

from .conftest import dominant_hz, hear, tone
from .sim import SimulatedRoom


@pytest.mark.parametrize("rate", [16000, 24000])
async def test_mic_arrives_at_the_backend_rate(
    room: SimulatedRoom, make_transport, rate: int
) -> None:
    t = await make_transport(input_rate=rate)
    await room.join("alice")
    mic = await room.publish_mic("alice", sample_rate=48000)
    await mic.say(tone(440, 300, 48000))
    frames = t.audio_input.frames()
    first = await asyncio.wait_for(anext(frames), 5)
    assert first.sample_rate == rate and first.channels == 1
    await asyncio.wait_for(hear(frames, 440, ms=200), 5)


async def _loud_ms(
    frames, stop_after_quiet_ms: float = 200.0, wait_for_sound: bool = True
) -> tuple[float, list[AudioFrame]]:
    """Listen to the agent's track: total loud ms until a stretch of quiet (after the sound)."""
    loud_ms, quiet_ms, loud = 0.0, 0.0, []
    async for f in frames:
        if f.rms() > 0.05:
            loud_ms += f.duration_ms
            quiet_ms = 0.0
            loud.append(f)
        elif loud_ms or not wait_for_sound:
            quiet_ms += f.duration_ms
            if quiet_ms >= stop_after_quiet_ms:
                break
    return loud_ms, loud


async def test_agent_voice_is_heard_on_its_track(room: SimulatedRoom, make_transport) -> None:
    t = await make_transport(output_rate=24000)
    listener = asyncio.ensure_future(_loud_ms(room.agent_audio(24000)))
    reply = tone(660, 400, 24000)
    for start in range(0, len(reply), 480):
        await t.audio_output.write(reply.slice(start, start + 480))
    await asyncio.wait_for(t.audio_output.wait_drained(), 3)
    loud_ms, loud = await asyncio.wait_for(listener, 5)
    assert loud_ms == pytest.approx(400, abs=30)
    assert dominant_hz(AudioFrame.concat(loud)) == pytest.approx(660, abs=25)
    assert t.audio_output.played_ms == pytest.approx(400, abs=1)
    assert t.audio_output.buffered_ms == 0


async def test_write_is_paced_by_a_bounded_queue(room: SimulatedRoom, make_transport) -> None:
    t = await make_transport(output_buffer_ms=200)
    out = t.audio_output
    audio = tone(300, 1000, 24000)
    worst = 0.0
    started = time.monotonic()
    for start in range(0, len(audio), 480):
        await out.write(audio.slice(start, start + 480))
        worst = max(worst, out.buffered_ms)
    took = time.monotonic() - started
    assert worst <= 200 + 1  # never more than the bound queued ahead of the listener
    assert took >= 0.7  # 1 s of audio cannot be accepted faster than (1 s - buffer)
    await out.wait_drained()
    assert out.played_ms == pytest.approx(1000, abs=1)


async def test_clear_stops_the_voice_and_reports_what_was_heard(
    room: SimulatedRoom, make_transport
) -> None:
    t = await make_transport(output_buffer_ms=240)
    out = t.audio_output
    heard = room.agent_audio(24000)
    reply = tone(500, 3000, 24000)

    interrupted = False

    async def speak() -> None:
        # like the session's playout: stop feeding once interrupted
        for start in range(0, len(reply), 480):
            await out.write(reply.slice(start, start + 480))
            if interrupted:
                return

    writer = asyncio.ensure_future(speak())
    # the listener is the clock: interrupt once it has heard 500 ms
    heard_ms = 0.0
    async for f in heard:
        if f.rms() > 0.05:
            heard_ms += f.duration_ms
            if heard_ms >= 500:
                break
    queued = out.buffered_ms
    interrupted = True
    dropped = out.clear()
    played = out.played_ms
    assert queued > 150  # the writer was keeping the queue full
    assert dropped == pytest.approx(queued, abs=15)
    # the writer blocked on back-pressure gives up instead of queueing stale audio
    await asyncio.wait_for(writer, 1)
    assert out.buffered_ms == 0
    # what the listener got is what the output says was played
    tail_ms, _ = await asyncio.wait_for(
        _loud_ms(heard, stop_after_quiet_ms=100, wait_for_sound=False), 3
    )
    assert heard_ms + tail_ms == pytest.approx(played, abs=30)
    assert tail_ms <= 30  # at most the block in flight when the queue was emptied
    assert played + dropped < 3000 - 1000  # most of the reply was never sent


async def test_output_resamples_and_refuses_bad_frames(room: SimulatedRoom) -> None:
    out = RoomAudioOutput(24000, buffer_ms=200)
    await out.write(tone(440, 100, 48000))  # another rate: resampled, not refused
    # (the resampler holds back its filter delay until more audio or a flush)
    assert 40 <= out.buffered_ms <= 110
    with pytest.raises(AudioFormatError):
        await out.write(b"\x00\x01")  # type: ignore[arg-type]
    with pytest.raises(AudioFormatError):
        RoomAudioOutput(24000, buffer_ms=5)
    dropped = out.clear()
    assert 30 <= dropped <= 110 and out.played_ms < 30
    await out.aclose()
