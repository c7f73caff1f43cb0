"""Caller audio to the server: resampled to the wire rate, encoded, sent in <= 20 ms appends.

No batching (each append leaves as soon as its audio arrives) and no silence
substituted for real audio. While the socket is being rebuilt, audio is held
(up to `HOLD_MS`, oldest dropped first) and sent first thing once it is back,
paced at `FLUSH_SPEED` times real time so the server is not flooded.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import deque
from typing import Any

import aiohttp

from duplex.agents import g711
from duplex.agents.audio import AudioFrame
from duplex.agents.resample import Resampler

from .connection import Connection
from .options import RealtimeOptions
from .state import SessionState

#: Appends are at most this long, so audio reaches the server as it is spoken.
CHUNK_MS = 20
#: Caller audio kept while the socket is being rebuilt.
HOLD_MS = 10_000
#: Held audio is sent at up to this multiple of real time (10 s of it takes 2.5 s).
FLUSH_SPEED = 4.0


class AudioUplink:
    def __init__(self, opts: RealtimeOptions, st: SessionState) -> None:
        self._opts = opts
        self._st = st
        self._resampler: Resampler | None = None
        self._held: deque[tuple[dict[str, Any], float]] = deque()
        self._held_ms = 0.0
        self._flushing = asyncio.Lock()
        #: Audio dropped because an outage outlasted `HOLD_MS` (ms, for tests and logs).
        self.dropped_ms = 0.0

    def _wire(self, frame: AudioFrame) -> AudioFrame | None:
        rate = self._opts.input_rate
        mono = frame.to_mono()
        if mono.sample_rate == rate:
            return mono
        if self._resampler is None or self._resampler.input_rate != mono.sample_rate:
            self._resampler = Resampler(mono.sample_rate, rate)
        return self._resampler.push(mono)

    def _encode(self, chunk: AudioFrame) -> str:
        fmt = self._opts.input_audio_format
        if fmt == "pcm16":
            payload = chunk.to_pcm16()
        else:
            payload = g711.encode(chunk, "ulaw" if fmt == "g711_ulaw" else "alaw")
        return base64.b64encode(payload).decode("ascii")

    async def push(self, frame: AudioFrame, conn: Connection | None) -> None:
        """Send ``frame`` on ``conn`` (None while reconnecting: hold it instead)."""
        wire = self._wire(frame)
        if wire is None:
            return
        step = wire.sample_rate * CHUNK_MS // 1000
        n = wire.samples_per_channel
        for start in range(0, n, step):
            chunk = wire.slice(start, min(start + step, n))
            event = {"type": "input_audio_buffer.append", "audio": self._encode(chunk)}
            self._st.buffer_ms += chunk.duration_ms
            self._st.input_ms += chunk.duration_ms
            if conn is not None and not self._held:
                try:
                    await conn.send(event)
                    continue
                except (ConnectionError, RuntimeError, aiohttp.ClientError):
                    conn = None
            self._hold(event, chunk.duration_ms)

    def _hold(self, event: dict[str, Any], ms: float) -> None:
        self._held.append((event, ms))
        self._held_ms += ms
        while self._held_ms > HOLD_MS and self._held:
            dropped = self._held.popleft()[1]
            self._held_ms -= dropped
            self.dropped_ms += dropped

    @property
    def held_ms(self) -> float:
        return self._held_ms

    async def flush(self, conn: Connection) -> None:
        """Send what was held, paced; an append leaves the hold only once it was sent."""
        async with self._flushing:
            started = time.monotonic()
            sent_ms = 0.0
            while self._held:
                event, ms = self._held[0]
                await conn.send(event)
                if self._held and self._held[0][0] is event:
                    self._held.popleft()
                    self._held_ms -= ms
                sent_ms += ms
                ahead = sent_ms / 1000.0 / FLUSH_SPEED - (time.monotonic() - started)
                if ahead > 0.05:
                    await asyncio.sleep(ahead)

    def clear(self) -> None:
        self._held.clear()
        self._held_ms = 0.0
        self._st.buffer_ms = 0.0
        if self._resampler is not None:
            self._resampler.reset()
