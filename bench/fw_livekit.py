"""livekit-agents under test: its `AgentSession` + livekit-plugins-openai's `RealtimeModel`.

No room: a custom `AudioInput` yields the caller's frames and a custom
`AudioOutput` plays into the same 1x `PlayoutClock` duplex plays into. The sink
follows livekit's sink contract (frames may come faster than real time; flush
ends a segment; clear_buffer stops at once; playback_finished reports the played
position, which is what livekit truncates the reply to). Echo warm-up is off;
every other setting is livekit's default.
"""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import numpy as np
from livekit import rtc
from livekit.agents import Agent, AgentSession
from livekit.agents.voice import io as lkio
from livekit.plugins.openai.realtime import RealtimeModel

from . import config as C
from .clock import PlayoutClock

FRAME = C.OUTPUT_RATE * C.FRAME_MS // 1000


class QueueInput(lkio.AudioInput):
    def __init__(self) -> None:
        super().__init__(label="bench-mic")
        self._queue: asyncio.Queue[rtc.AudioFrame | None] = asyncio.Queue()

    def push(self, pcm: np.ndarray) -> None:
        self._queue.put_nowait(rtc.AudioFrame(pcm.tobytes(), C.INPUT_RATE, 1, pcm.size))

    def end(self) -> None:
        self._queue.put_nowait(None)

    async def __anext__(self) -> rtc.AudioFrame:
        frame = await self._queue.get()
        if frame is None:
            raise StopAsyncIteration
        return frame


class ClockedSink(lkio.AudioOutput):
    def __init__(self, clock: PlayoutClock) -> None:
        super().__init__(
            label="bench-speaker",
            capabilities=lkio.AudioOutputCapabilities(pause=True),
            sample_rate=C.OUTPUT_RATE,
        )
        self.clock = clock
        self._rest = np.zeros(0, dtype=np.int16)
        self._open = False  # a segment was captured and has not reported playback_finished
        self._pushed_s = 0.0
        self._finish: asyncio.Task[None] | None = None

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        if self._finish is not None:  # a new segment before the last one played out
            self._finish.cancel()
            self._finish = None
            self._report(interrupted=False)
        self._open = True
        pcm = np.frombuffer(frame.data, dtype=np.int16)
        if self._rest.size:
            pcm = np.concatenate([self._rest, pcm])
        n = pcm.size // FRAME
        for _ in range(n):
            self.clock.write()
            self._pushed_s += C.FRAME_MS / 1000.0
        self._rest = pcm[n * FRAME :]

    def flush(self) -> None:
        super().flush()
        if self._rest.size:
            self.clock.write(self._rest.size / C.OUTPUT_RATE)
            self._pushed_s += self._rest.size / C.OUTPUT_RATE
            self._rest = np.zeros(0, dtype=np.int16)
        if self._open and self._finish is None:
            self._finish = asyncio.get_running_loop().create_task(self._played_out())

    def clear_buffer(self) -> None:
        self._rest = np.zeros(0, dtype=np.int16)
        dropped_ms = self.clock.clear()
        if self._finish is not None:
            self._finish.cancel()
            self._finish = None
        if self._open:
            self._report(interrupted=True, dropped_s=dropped_ms / 1000.0)

    def pause(self) -> None:
        super().pause()
        self.clock.pause()

    def resume(self) -> None:
        super().resume()
        self.clock.resume()

    async def _played_out(self) -> None:
        await self.clock.wait_drained()
        await asyncio.sleep(C.FRAME_MS / 1000.0)  # the last frame plays out
        self._finish = None
        self._report(interrupted=False)

    def _report(self, *, interrupted: bool, dropped_s: float = 0.0) -> None:
        position = max(0.0, self._pushed_s - dropped_s)
        self._open = False
        self._pushed_s = 0.0
        self.on_playback_finished(playback_position=position, interrupted=interrupted)


class LivekitCall:
    def __init__(
        self, url: str, sid: str, clock: PlayoutClock, http: aiohttp.ClientSession
    ) -> None:
        self.input = QueueInput()
        self.sink = ClockedSink(clock)
        model = RealtimeModel(model=sid, base_url=url, api_key="sk-bench", http_session=http)
        self.session: AgentSession[None] = AgentSession(llm=model, aec_warmup_duration=None)
        self.session.input.audio = self.input
        self.session.output.audio = self.sink
        self.errors = 0

        def count(_: object) -> None:
            self.errors += 1

        self.session.on("error", count)

    def push(self, pcm: np.ndarray) -> None:
        self.input.push(pcm)

    async def start(self) -> None:
        await self.session.start(Agent(instructions="You are the benchmark's agent."), record=False)

    async def aclose(self) -> None:
        self.input.end()
        with contextlib.suppress(Exception):
            await self.session.aclose()
