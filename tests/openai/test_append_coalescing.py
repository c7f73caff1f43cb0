"""Caller audio over the wire: every sample arrives once and in order, in appends of at most
60 ms; appends of the cadence (one frame at the default 20 ms, two at 40 ms) while the loop
keeps up, merged further only while it is behind (a stalled loop, a slow socket). The test
server validates every append against the SDK's schema."""

from __future__ import annotations

import asyncio
import base64
import socket
import time
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt
import pytest

from duplex.agents.audio import AudioFrame
from duplex.agents.conversation import Conversation
from duplex.backends.openai import OpenAIRealtimeSession

from .helpers import backend
from .server import RealtimeTestServer

RATE = 24000
FRAME = RATE // 50  # 20 ms
MAX_SAMPLES = RATE * 60 // 1000  # 60 ms


def stall(seconds: float) -> None:
    """Block the event loop, as a burst of CPU-bound work in the process would."""
    time.sleep(seconds)


def signal(frames: int, seed: int = 7) -> npt.NDArray[np.int16]:
    """Noise: any lost, repeated or reordered sample shows in a comparison."""
    rng = np.random.default_rng(seed)
    return rng.integers(-20000, 20000, frames * FRAME).astype(np.int16)


def frames_of(audio: npt.NDArray[np.int16], size: int = FRAME) -> list[AudioFrame]:
    return [
        AudioFrame(audio[i : i + size].reshape(-1, 1), RATE) for i in range(0, len(audio), size)
    ]


def appended(server: RealtimeTestServer) -> list[npt.NDArray[np.int16]]:
    return [
        np.frombuffer(base64.b64decode(e["audio"]), "<i2")
        for e in server.of_type("input_audio_buffer.append")
    ]


def _small_send_buffer(addr: Any) -> socket.socket:
    """A client socket with a small kernel send buffer, so a slow reader backs it up soon."""
    family, kind, proto = addr[0], addr[1], addr[2]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
    return sock


async def connect(
    server: RealtimeTestServer, http: aiohttp.ClientSession | None = None, **options: Any
) -> OpenAIRealtimeSession:
    b = backend(server, turn_detection=None, http_session=http, **options)
    session = await b.connect(instructions="", tools=[], conversation=Conversation())
    assert isinstance(session, OpenAIRealtimeSession)
    return session


async def received_all(server: RealtimeTestServer, samples: int) -> list[npt.NDArray[np.int16]]:
    await server.wait_until(lambda: sum(len(a) for a in appended(server)) >= samples, 10.0)
    return appended(server)


async def test_idle_loop_sends_each_frame_at_once_by_default(server: RealtimeTestServer) -> None:
    session = await connect(server)
    audio = signal(25)
    for frame in frames_of(audio):
        assert session.push_audio_nowait(frame)
        # an idle loop: the frame is on the wire before the next one is captured
        sent = len(appended(server)) + 1
        await server.wait_until(lambda: len(appended(server)) >= sent, 5.0)  # noqa: B023
        await asyncio.sleep(0.02)
    got = await received_all(server, len(audio))
    assert [len(a) for a in got] == [FRAME] * 25
    assert np.array_equal(np.concatenate(got), audio)
    await session.aclose()


async def test_stalled_loop_merges_up_to_60ms_and_loses_nothing(
    server: RealtimeTestServer,
) -> None:
    session = await connect(server)
    audio = signal(60)
    for frame in frames_of(audio):
        stall(0.025)  # the loop is stalled: every frame arrives late
        assert session.push_audio_nowait(frame)
        await asyncio.sleep(0)
    got = await received_all(server, len(audio))
    sizes = [len(a) for a in got]
    assert np.array_equal(np.concatenate(got), audio)
    assert max(sizes) <= MAX_SAMPLES
    assert max(sizes) > FRAME  # merged while behind
    assert len(got) < 60
    await session.aclose()


async def test_slow_socket_backs_up_into_merged_appends_in_order(
    server: RealtimeTestServer,
) -> None:
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(socket_factory=_small_send_buffer))
    session = await connect(server, http)
    audio = signal(450)  # 9 s, pushed at once: more than the socket buffers hold
    server.read_gate = asyncio.Event()
    for frame in frames_of(audio):
        assert session.push_audio_nowait(frame)
    await asyncio.sleep(0.2)
    server.read_gate.set()
    got = await received_all(server, len(audio))
    sizes = [len(a) for a in got]
    assert np.array_equal(np.concatenate(got), audio)
    assert max(sizes) <= MAX_SAMPLES
    assert len(got) < 450  # the backed-up frames left merged
    await session.aclose()
    await http.close()


async def test_a_socket_that_stops_reading_holds_at_most_10s_newest_audio_kept(
    server: RealtimeTestServer,
) -> None:
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(socket_factory=_small_send_buffer))
    session = await connect(server, http)
    audio = signal(1000)  # 20 s while the server reads nothing
    server.read_gate = asyncio.Event()
    for frame in frames_of(audio):
        assert session.push_audio_nowait(frame)
    await asyncio.sleep(0.2)
    server.read_gate.set()
    tail = audio[-500 * FRAME :]  # the newest 10 s all arrive, in order
    await server.wait_until(
        lambda: (
            (g := appended(server)) != [] and np.array_equal(np.concatenate(g)[-len(tail) :], tail)
        ),
        10.0,
    )
    got = np.concatenate(appended(server))
    assert len(got) < len(audio)  # the oldest of what waited went
    # what arrived is the start (already on the wire) and the newest 10 s, nothing else
    head = len(got) - len(tail)
    assert np.array_equal(got[:head], audio[:head])
    await session.aclose()
    await http.close()


async def test_appends_precede_the_commit_that_follows_them(server: RealtimeTestServer) -> None:
    """A merge still pending when the session sends another event goes first."""
    session = await connect(server)
    audio = signal(5)  # 60 ms leave merged, the last 40 ms are still waiting at the commit
    types = await push_then_commit(session, server, audio, stall_s=0.025)
    assert types[-1] == "input_audio_buffer.commit"
    await session.aclose()


async def push_then_commit(
    session: OpenAIRealtimeSession,
    server: RealtimeTestServer,
    audio: npt.NDArray[np.int16],
    *,
    stall_s: float = 0.0,
) -> list[str]:
    """Push ``audio`` frame by frame (the loop stalled ``stall_s`` before each), commit,
    check every sample arrived in order, and return the input buffer events received."""
    for frame in frames_of(audio):
        if stall_s:
            stall(stall_s)
        session.push_audio_nowait(frame)
    await session.commit_audio()
    assert np.array_equal(np.concatenate(appended(server)), audio)
    return [t for t in server.received_types() if t.startswith("input_audio_buffer")]


async def test_large_frames_are_cut_to_at_most_60ms(server: RealtimeTestServer) -> None:
    session = await connect(server)
    audio = signal(50)
    for frame in frames_of(audio, size=RATE // 5):  # 200 ms frames
        stall(0.025)
        session.push_audio_nowait(frame)
    got = await received_all(server, len(audio))
    assert max(len(a) for a in got) <= MAX_SAMPLES
    assert np.array_equal(np.concatenate(got), audio)
    await session.aclose()


async def test_a_40ms_cadence_sends_two_frames_per_append_in_order(
    server: RealtimeTestServer,
) -> None:
    session = await connect(server, append_cadence_ms=40)
    audio = signal(20)
    frames = frames_of(audio)
    for i in range(0, len(frames), 2):
        assert session.push_audio_nowait(frames[i])  # waits for its partner
        assert session.push_audio_nowait(frames[i + 1])  # 40 ms: both leave now
        sent = i // 2 + 1
        await server.wait_until(lambda: len(appended(server)) >= sent, 5.0)  # noqa: B023
    got = await received_all(server, len(audio))
    assert [len(a) for a in got] == [2 * FRAME] * 10  # half the messages of one per frame
    assert np.array_equal(np.concatenate(got), audio)
    await session.aclose()


async def test_a_held_frame_leaves_alone_when_no_partner_comes(server: RealtimeTestServer) -> None:
    session = await connect(server, append_cadence_ms=60)
    audio = signal(2)
    for frame in frames_of(audio):
        assert session.push_audio_nowait(frame)
    # the caller stopped sending: the sweep lets the held 40 ms go after its time
    got = await received_all(server, len(audio))
    assert [len(a) for a in got] == [2 * FRAME]
    assert np.array_equal(got[0], audio)
    await session.aclose()


async def test_a_frame_held_for_the_cadence_goes_before_the_commit(
    server: RealtimeTestServer,
) -> None:
    # 40 ms: five frames are two appends and one held
    session = await connect(server, append_cadence_ms=40)
    types = await push_then_commit(session, server, signal(5))
    # (a loop that happens to run late merges more: 2 or 3 appends, the commit always last)
    assert types[-1] == "input_audio_buffer.commit" and len(types) >= 3
    assert set(types[:-1]) == {"input_audio_buffer.append"}
    await session.aclose()


def test_cadence_is_validated() -> None:
    from duplex.agents.errors import ConfigurationError
    from duplex.backends.openai import OpenAIRealtime

    with pytest.raises(ConfigurationError, match="append_cadence_ms"):
        OpenAIRealtime(base_url="http://127.0.0.1:9/v1", api_key="k", env={}, append_cadence_ms=80)


async def test_a_20ms_cadence_sends_frames_pushed_together_one_by_one(
    server: RealtimeTestServer,
) -> None:
    """At 20 ms (the default) the same pairs as above leave as single frames."""
    session = await connect(server, append_cadence_ms=20)
    audio = signal(20)
    frames = frames_of(audio)
    for i in range(0, len(frames), 2):
        assert session.push_audio_nowait(frames[i])
        assert session.push_audio_nowait(frames[i + 1])
        await server.wait_until(
            lambda: sum(len(a) for a in appended(server)) >= (i + 2) * FRAME,  # noqa: B023
            5.0,
        )
    got = await received_all(server, len(audio))
    assert np.array_equal(np.concatenate(got), audio)
    # one frame per append (a pair merges only if the loop happened to be 15 ms late)
    assert sum(len(a) == FRAME for a in got) > len(frames) // 2
    await session.aclose()
