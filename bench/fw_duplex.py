"""duplex under test: `AgentSession` + `OpenAIRealtime` over a MemoryTransport-like call.

The transport is what a real one would be minus the network: caller frames go in
through a queue as the metronome delivers them; agent frames go to a 1x
`PlayoutClock` with a 100 ms buffer (back-pressure, like duplex's LiveKit and
WebRTC outputs) and ``clear()`` stops it at once.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from duplex.agents import Agent, AgentSession, AudioFrame, AudioOutput, SessionError, Transport
from duplex.agents.testing.memory import MemoryAudioInput
from duplex.backends.openai import OpenAIRealtime

from . import config as C
from .clock import PlayoutClock

BUFFER_FRAMES = 5  # 100 ms


class ClockedOutput(AudioOutput):
    sample_rate = C.OUTPUT_RATE
    channels = 1
    frame_ms = float(C.FRAME_MS)

    def __init__(self, clock: PlayoutClock) -> None:
        self.clock = clock

    async def write(self, frame: AudioFrame) -> None:
        await self.clock.wait_space(BUFFER_FRAMES)
        self.clock.write(frame.duration)

    def clear(self) -> float:
        return self.clock.clear()

    @property
    def buffered_ms(self) -> float:
        return self.clock.buffered_ms

    async def wait_drained(self) -> None:
        await self.clock.wait_drained()


class BenchTransport(Transport):
    def __init__(self, clock: PlayoutClock) -> None:
        super().__init__()
        self.mic = MemoryAudioInput(C.INPUT_RATE, 1)
        self.audio_input = self.mic
        self.audio_output = ClockedOutput(clock)

    def push(self, pcm: np.ndarray) -> None:
        self.mic.push(AudioFrame(pcm.reshape(-1, 1), C.INPUT_RATE, 1, _checked=True))

    async def aclose(self) -> None:
        self.mic.end()
        await super().aclose()


class DuplexCall:
    """One session; ``variant`` "local_vad" (WebRTC VAD for barge-in) or "server_vad"."""

    def __init__(self, url: str, sid: str, clock: PlayoutClock, variant: str) -> None:
        self.transport = BenchTransport(clock)
        kwargs: dict[str, Any] = {}
        cadence = os.environ.get("BENCH_APPEND_CADENCE_MS")  # A/B of the append cadence
        if cadence:
            kwargs["append_cadence_ms"] = float(cadence)
        backend = OpenAIRealtime(
            base_url=url, api_key="sk-bench", model=sid, env={}, max_session_duration=None, **kwargs
        )
        kwargs = {}
        if variant == "local_vad":
            from duplex.plugins.webrtcvad import WebRTCVAD

            kwargs["vad"] = WebRTCVAD()
        else:
            kwargs["local_vad_for_barge_in"] = False
        self.session = AgentSession(
            agent=Agent(instructions="You are the benchmark's agent."), backend=backend, **kwargs
        )
        self.errors = 0

        def count(_: SessionError) -> None:
            self.errors += 1

        self.session.on(SessionError, count)

    def push(self, pcm: np.ndarray) -> None:
        self.transport.push(pcm)

    async def start(self) -> None:
        await self.session.start(self.transport)

    async def aclose(self) -> None:
        await self.session.aclose()
