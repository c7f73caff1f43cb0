"""Shared test helpers: feed speech, watch backend events, hear what the agent said."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from duplex.agents.audio import AudioFrame
from duplex.agents.backend import AudioDelta, BackendEvent, BackendSession
from duplex.agents.resample import Resampler

from ..speech import split

E = TypeVar("E")


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


class EventLog:
    """Collects a backend session's events; tests await the one they expect."""

    def __init__(self, session: BackendSession) -> None:
        self.events: list[BackendEvent] = []
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._pump(session))

    async def _pump(self, session: BackendSession) -> None:
        async for ev in session.events():
            self.events.append(ev)
            self._changed.set()

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]

    async def wait_for(
        self,
        kind: type[E],
        pred: Callable[[E], bool] | None = None,
        *,
        timeout: float = 20.0,
        after: int = 0,
    ) -> E:
        async def scan() -> E:
            seen = after
            while True:
                for ev in self.events[seen:]:
                    if isinstance(ev, kind) and (pred is None or pred(ev)):
                        return ev
                seen = len(self.events)
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(scan(), timeout)

    def audio(self, response_id: str | None = None) -> AudioFrame:
        frames = [e.frame for e in self.of(AudioDelta) if response_id in (None, e.response_id)]
        return AudioFrame.concat(frames)

    async def aclose(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def say(session: BackendSession, speech: AudioFrame, frame_ms: float = 20.0) -> None:
    """Push an utterance as the session does in local-VAD mode, then commit it."""
    for frame in split(speech, frame_ms):
        await session.push_audio(frame)
    await session.commit_audio()


def to_16k(frame: AudioFrame) -> np.ndarray[Any, np.dtype[np.float32]]:
    if frame.sample_rate == 16000:
        return frame.to_float()[:, 0]
    rs = Resampler(frame.sample_rate, 16000)
    parts = [f for f in (rs.push(frame), rs.flush()) if f is not None]
    return AudioFrame.concat(parts).to_float()[:, 0]


def hear(transcriber: Callable[[np.ndarray[Any, Any]], str], frames: Sequence[AudioFrame]) -> str:
    """What a listener hears in agent audio: Whisper on the frames, as 16 kHz int16."""
    audio = to_16k(AudioFrame.concat(list(frames)))
    return transcriber((audio * 32767).astype(np.int16))
