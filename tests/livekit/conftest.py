from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest

from duplex.agents.audio import AudioFrame
from duplex.plugins.livekit import LiveKitCredentials, RoomTransport

from .sim import API_KEY, API_SECRET, SimulatedRoom

CREDS = LiveKitCredentials("ws://127.0.0.1:7880", API_KEY, API_SECRET)


@pytest.fixture
async def room() -> AsyncIterator[SimulatedRoom]:
    r = SimulatedRoom()
    yield r
    if r.isconnected():
        await r.disconnect()


@pytest.fixture
async def make_transport(room: SimulatedRoom) -> AsyncIterator[Any]:
    made: list[RoomTransport] = []

    async def make(*, start: bool = True, **kw: Any) -> RoomTransport:
        kw.setdefault("room_name", "test-room")
        kw.setdefault("credentials", CREDS)
        t = RoomTransport(room=room, **kw)
        if start:
            await t.start()
        made.append(t)
        return t

    yield make
    for t in made:
        await t.aclose()


def tone(freq: float, ms: float, rate: int, level: float = 0.3) -> AudioFrame:
    n = int(rate * ms / 1000)
    return AudioFrame.from_float(level * np.sin(2 * np.pi * freq * np.arange(n) / rate), rate)


def dominant_hz(frame: AudioFrame) -> float:
    x = frame.to_float()[:, 0]
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / frame.sample_rate)[int(np.argmax(spectrum))])


async def collect(
    frames: AsyncIterator[AudioFrame], until: Callable[[list[AudioFrame]], bool]
) -> list[AudioFrame]:
    got: list[AudioFrame] = []
    async for f in frames:
        got.append(f)
        if until(got):
            break
    return got


async def hear(frames: AsyncIterator[AudioFrame], freq: float, ms: float = 100.0) -> None:
    """Read until ``ms`` of consecutive loud audio whose pitch is ``freq`` has arrived."""
    loud: list[AudioFrame] = []
    async for f in frames:
        if f.rms() < 0.05:
            loud.clear()
            continue
        loud.append(f)
        if sum(x.duration_ms for x in loud) >= ms:
            if abs(dominant_hz(AudioFrame.concat(loud)) - freq) < 25:
                return
            loud.clear()
