"""The push-style input path in a whole call: every caller sample reaches the server once and in
order, through resampling, the local VAD (and the turn events it raises) and a stalled loop."""

from __future__ import annotations

import asyncio
import base64
import time

import numpy as np
import numpy.typing as npt

from duplex.agents import Agent, AgentSession
from duplex.agents.audio import AudioFrame
from duplex.agents.events import UserStateChanged
from duplex.agents.resample import LOW_LATENCY, Resampler
from duplex.agents.testing import MemoryTransport
from duplex.plugins.webrtcvad import WebRTCVAD

from ..speech import concat, silence, speak, split
from .helpers import backend
from .server import RealtimeTestServer, Reply


def stall(seconds: float) -> None:
    """Block the event loop, as a burst of CPU-bound work in the process would."""
    time.sleep(seconds)


def caller_audio() -> AudioFrame:
    """48 kHz speech with a noise floor, so every frame differs from its neighbours."""
    speech = concat(
        silence(0.4, 48000), speak("is the shop open on sunday", 48000), silence(0.8, 48000)
    )
    rng = np.random.default_rng(3)
    noisy = np.clip(
        speech.data[:, 0].astype(np.int32) + rng.integers(-40, 40, len(speech)), -32768, 32767
    )
    return AudioFrame(noisy.astype(np.int16).reshape(-1, 1), 48000)


def expected_at_24k(frames: list[AudioFrame]) -> npt.NDArray[np.int16]:
    """What the session should send: the same streaming resampler, run here on its own."""
    r = Resampler(48000, 24000, quality=LOW_LATENCY)
    out = [r.push(f) for f in frames]
    return np.concatenate([o.data[:, 0] for o in out if o is not None])


def appended(server: RealtimeTestServer) -> npt.NDArray[np.int16]:
    chunks = [
        np.frombuffer(base64.b64decode(e["audio"]), "<i2")
        for e in server.of_type("input_audio_buffer.append")
    ]
    return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


async def call(
    server: RealtimeTestServer, **session_options: object
) -> tuple[AgentSession, MemoryTransport]:
    server.default_reply = lambda: Reply(audio_ms=200)
    session = AgentSession(
        agent=Agent(instructions="Be brief."),
        backend=backend(server),
        **session_options,  # type: ignore[arg-type]
    )
    transport = MemoryTransport(input_rate=48000, output_rate=48000)
    await session.start(transport)
    return session, transport


async def test_every_sample_reaches_the_server_in_order_through_a_stalled_loop(
    server: RealtimeTestServer,
) -> None:
    session, transport = await call(server, vad=WebRTCVAD())
    frames = split(caller_audio(), 20)
    speaking = session.next_event(UserStateChanged, lambda e: e.new == "speaking")
    for i, frame in enumerate(frames):
        if i % 10 == 0:
            stall(0.06)  # the loop stalls; frames still arrive one by one after it
        transport.audio_input.push(frame)
        await asyncio.sleep(0)
    await asyncio.wait_for(speaking, 5)  # the local VAD heard the speech on the way
    want = expected_at_24k(frames)
    await server.wait_until(lambda: len(appended(server)) >= len(want), 10)
    assert np.array_equal(appended(server), want)
    await session.aclose()
