"""`WebRTCTransport` between two real aiortc peers in one process: media, pacing, teardown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from duplex.agents.events import AgentStateChanged, UserTranscribed
from duplex.plugins.webrtc import AgentAudioTrack, SignalingError, WebRTCTransport, check_offer
from tests.leaks import tasks_touching
from tests.webrtc.peer import ClientPeer, StalledTrack, dominant_hz, tone48k


@asynccontextmanager
async def call(
    source: MediaStreamTrack | None = None, **options: Any
) -> AsyncIterator[tuple[WebRTCTransport, ClientPeer]]:
    transport = WebRTCTransport(**options)
    client = ClientPeer(source)
    answer = await transport.accept(await client.offer())
    await client.answer(answer)
    try:
        yield transport, client
    finally:
        await client.close()
        await transport.aclose()


async def drain(frames: AsyncIterator[Any]) -> int:
    return len([f async for f in frames])


async def test_audio_flows_both_ways_at_48k() -> None:
    async with call() as (transport, client):
        assert isinstance(client.mic, AgentAudioTrack)
        await client.mic.write(tone48k(440, 1500))
        heard = []
        async for frame in transport.audio_input.frames():
            assert frame.sample_rate == 48000 and frame.channels == 1
            heard.append(frame)
            if sum(f.duration_ms for f in heard) >= 1200:
                break
        # Skip Opus's start-up, then the caller's tone must come through as a tone.
        assert abs(dominant_hz(heard[15:]) - 440) < 10

        # The agent speaks: the client's track has queued silence since the call began.
        writer = asyncio.ensure_future(transport.audio_output.write(tone48k(880, 1000)))
        voiced = await client.receive_burst()
        await writer
        assert 40 <= len(voiced) <= 52  # ~1 s of 20 ms frames, none lost, none invented
        assert abs(dominant_hz(voiced[5:-5]) - 880) < 10


async def test_output_track_paces_20ms_frames_on_the_clock() -> None:
    track = AgentAudioTrack()
    loop = asyncio.get_running_loop()
    await track.write(tone48k(440, 100))
    start = loop.time()
    frames = [await track.recv() for _ in range(26)]
    elapsed = loop.time() - start
    assert 0.45 <= elapsed <= 0.65  # 25 frame periods after the first
    assert [f.pts for f in frames[:3]] == [0, 960, 1920]
    assert all(f.samples == 960 and f.sample_rate == 48000 for f in frames)
    levels = [float(np.abs(f.to_ndarray()).max()) for f in frames]
    assert all(v > 5000 for v in levels[:5]) and all(v == 0 for v in levels[5:])
    assert track.sent_samples == 4800
    track.stop()


async def test_write_applies_back_pressure() -> None:
    track = AgentAudioTrack(max_buffer_ms=100)
    for _ in range(5):
        await track.write(tone48k(440, 20))
    assert track.buffered_ms == 100
    blocked = asyncio.ensure_future(track.write(tone48k(440, 20)))
    await asyncio.sleep(0)
    assert not blocked.done()
    await track.recv()
    await asyncio.sleep(0)
    assert not blocked.done()  # a full buffer wakes its writer once drained to half
    for _ in range(2):
        await track.recv()
    await asyncio.wait_for(blocked, 1)
    assert track.buffered_ms == 60
    track.stop()


async def test_clear_drops_unplayed_audio_and_releases_writers() -> None:
    track = AgentAudioTrack(max_buffer_ms=100)
    for _ in range(5):
        await track.write(tone48k(440, 20))
    blocked = asyncio.ensure_future(track.write(tone48k(440, 20)))
    await asyncio.sleep(0)
    drained = asyncio.ensure_future(track.wait_drained())
    await asyncio.sleep(0)
    assert not drained.done()

    assert track.clear() == pytest.approx(100.0)
    await asyncio.wait_for(blocked, 1)
    await asyncio.wait_for(drained, 1)
    # The write that waited belonged to the interrupted reply: dropped, not queued.
    assert track.buffered_ms == 0
    assert float(np.abs((await track.recv()).to_ndarray()).max()) == 0
    assert track.clear() == 0.0
    track.stop()


async def test_wait_drained_returns_when_played() -> None:
    track = AgentAudioTrack()
    await track.write(tone48k(440, 60))
    drained = asyncio.ensure_future(track.wait_drained())
    for _ in range(2):
        await track.recv()
        assert not drained.done()
    await track.recv()
    await asyncio.wait_for(drained, 1)
    track.stop()


async def test_stopped_track_unblocks_writers_and_ends() -> None:
    track = AgentAudioTrack(max_buffer_ms=20)
    await track.write(tone48k(440, 20))
    blocked = asyncio.ensure_future(track.write(tone48k(440, 20)))
    await asyncio.sleep(0)
    track.stop()
    await asyncio.wait_for(blocked, 1)
    await asyncio.wait_for(track.wait_drained(), 1)
    with pytest.raises(MediaStreamError):
        await track.recv()
    await track.write(tone48k(440, 20))  # after hang-up: accepted and dropped
    assert track.buffered_ms == 0


async def test_data_channel_carries_events_out_and_text_in() -> None:
    transport = WebRTCTransport()
    # Published before the channel opens: held, then delivered in order.
    transport.publish(AgentStateChanged("initializing", "listening"))
    transport.publish(UserTranscribed("item_1", "hello", True))
    transport.publish(object())  # not a session event: ignored
    typed: asyncio.Queue[str] = asyncio.Queue()

    async def on_text(text: str) -> None:
        typed.put_nowait(text)

    transport.set_text_handler(on_text)
    client = ClientPeer()
    try:
        await client.answer(await transport.accept(await client.offer()))
        first = await client.messages.get()
        second = await client.messages.get()
        assert first == {"type": "agent_state", "old": "initializing", "state": "listening"}
        assert second["type"] == "transcript" and second["role"] == "user"
        assert second["text"] == "hello" and second["final"] is True

        client.send({"type": "text", "text": "  what's up?  "})
        assert await asyncio.wait_for(typed.get(), 5) == "what's up?"
        client.send("{nope")
        error = await client.next_message("error")
        assert error["code"] == "bad_message" and "JSON" in error["message"]
        client.send({"type": "launch_missiles"})
        assert "unknown message type" in (await client.next_message("error"))["message"]
        client.send({"type": "ping"})
        await client.next_message("pong")
        assert typed.empty()
    finally:
        await client.close()
        await transport.aclose()


async def test_hangup_message_closes_everything() -> None:
    async with call() as (transport, client):
        objects = [transport, transport.pc, transport.audio_output, transport.audio_input]
        frames = transport.audio_input.frames()
        assert tasks_touching(objects)
        client.send({"type": "hangup"})
        await asyncio.wait_for(transport.closed.wait(), 5)
        assert transport.close_reason == "hangup"
        assert transport.pc.connectionState == "closed"
        assert not transport.tasks
        assert tasks_touching(objects) == []
        await asyncio.wait_for(drain(frames), 2)  # the session's input loop ends too
        assert transport.audio_output.readyState == "ended"


async def test_peer_closing_its_connection_ends_the_call() -> None:
    async with call() as (transport, client):
        await client.close()
        await asyncio.wait_for(transport.closed.wait(), 10)
        assert transport.close_reason in ("hangup", "connection_closed")
        assert not transport.tasks
        await asyncio.wait_for(drain(transport.audio_input.frames()), 2)


async def test_silent_peer_is_dropped_after_media_timeout() -> None:
    async with call(StalledTrack(), media_timeout_s=0.5) as (transport, _client):
        await asyncio.wait_for(transport.closed.wait(), 5)
        assert transport.close_reason == "media_timeout"
        assert not transport.tasks


async def test_peer_that_never_answers_is_dropped() -> None:
    transport = WebRTCTransport(connect_timeout_s=0.3)
    client = ClientPeer()
    try:
        await transport.accept(await client.offer())  # the answer is never applied
        await asyncio.wait_for(transport.closed.wait(), 5)
        assert transport.close_reason == "connect_timeout"
        assert not transport.tasks
    finally:
        await client.close()


async def test_close_is_idempotent_and_concurrent_safe() -> None:
    async with call() as (transport, _client):
        await asyncio.gather(transport.aclose(), transport.aclose("other"))
        await transport.aclose()
        assert transport.closed.is_set() and transport.close_reason == "closed"


async def test_offers_that_cannot_carry_a_call_are_refused() -> None:
    client = ClientPeer()
    good = await client.offer()
    await client.close()
    check_offer(good)
    cases = {
        "": "no SDP",
        "hello": "not SDP",
        good.replace("m=audio", "m=video"): "no audio",
        "\n".join(line for line in good.splitlines() if not line.startswith("a=ice-pwd")): "ICE",
        "\n".join(line for line in good.splitlines() if "fingerprint" not in line): "DTLS",
    }
    for sdp, reason in cases.items():
        with pytest.raises(SignalingError, match=reason):
            check_offer(sdp)
    transport = WebRTCTransport()
    with pytest.raises(SignalingError):
        await transport.accept("v=0\r\n")
    assert transport.closed.is_set() and not transport.tasks


async def test_ice_consent_expiry_ends_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer whose network vanishes fails ICE consent (RFC 7675); sped up here."""
    import aioice.ice
    import aioice.stun

    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.05)
    monkeypatch.setattr(aioice.stun, "RETRY_RTO", 0.05)
    async with call(media_timeout_s=60) as (transport, client):
        # The client's network goes away: its ICE sockets close without a word.
        for transceiver in client.pc.getTransceivers():
            await transceiver.sender.transport.transport.stop()
        await asyncio.wait_for(transport.closed.wait(), 10)
        # aiortc reports an expired consent as a closed connection, not a failed one.
        assert transport.close_reason == "connection_closed"
        assert not transport.tasks
