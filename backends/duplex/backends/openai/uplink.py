"""Caller audio to the server: resampled to the wire rate, encoded, handed to the connection.

Each frame is split into appends of at most `CHUNK_MS` and given to the
connection's `AppendQueue`, which writes it at once (or merges a few frames
while the event loop is behind); no silence is ever substituted for real audio.
While the socket is being rebuilt, audio is held (up to `HOLD_MS`, oldest
dropped first) and sent first thing once it is back, paced at `FLUSH_SPEED`
times real time so the server is not flooded. Audio still queued on a socket
that died is held the same way.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import aiohttp

from duplex.agents import g711
from duplex.agents.audio import AudioFrame
from duplex.agents.resample import Resampler

from .appends import append_message
from .connection import Connection, new_event_id
from .options import RealtimeOptions
from .state import SessionState

#: A frame is cut into appends of at most this long (merging may join them up to 60 ms).
CHUNK_MS = 20
#: Caller audio kept while the socket is being rebuilt.
HOLD_MS = 10_000
#: Held audio is sent at up to this multiple of real time (10 s of it takes 2.5 s).
FLUSH_SPEED = 4.0
_SEND_ERRORS = (ConnectionError, RuntimeError, aiohttp.ClientError)


class AudioUplink:
    def __init__(self, opts: RealtimeOptions, st: SessionState) -> None:
        self._opts = opts
        self._st = st
        self._rate = opts.input_rate  # options are frozen: looked up once, not per frame
        self._pcm16 = opts.input_audio_format == "pcm16"
        self._resampler: Resampler | None = None
        self._held: deque[tuple[bytes, float]] = deque()
        self._held_ms = 0.0
        self._flushing = asyncio.Lock()
        #: The connection audio was last queued on (its leftovers are held if it dies).
        self._conn: Connection | None = None
        #: Audio dropped because an outage outlasted `HOLD_MS` (ms, for tests and logs).
        self.dropped_ms = 0.0

    def _wire(self, frame: AudioFrame) -> AudioFrame | None:
        rate = self._rate
        mono = frame.to_mono()
        if mono.sample_rate == rate:
            return mono
        if self._resampler is None or self._resampler.input_rate != mono.sample_rate:
            self._resampler = Resampler(mono.sample_rate, rate)
        return self._resampler.push(mono)

    def _encode(self, chunk: AudioFrame) -> bytes:
        if self._pcm16:
            return chunk.to_pcm16()
        fmt = self._opts.input_audio_format
        return g711.encode(chunk, "ulaw" if fmt == "g711_ulaw" else "alaw")

    def feed(self, frame: AudioFrame, conn: Connection | None) -> None:
        """Queue ``frame`` on ``conn`` without awaiting (None while reconnecting: hold it)."""
        wire = self._wire(frame)
        if wire is None:
            return
        if conn is not None and conn is not self._conn:
            self._adopt(conn)
        n = wire.data.shape[0]
        step = wire.sample_rate * CHUNK_MS // 1000
        chunks = (
            (wire,) if n <= step else [wire.slice(i, min(i + step, n)) for i in range(0, n, step)]
        )
        st = self._st
        direct = conn is not None and not self._held and not self._flushing.locked()
        queue = conn.audio if conn is not None and direct else None
        for chunk in chunks:
            payload = self._encode(chunk)
            ms = 1000.0 * chunk.data.shape[0] / chunk.sample_rate  # its duration_ms
            st.buffer_ms += ms
            st.input_ms += ms
            if queue is not None:
                try:
                    queue.add(payload, ms)
                    continue
                except _SEND_ERRORS:
                    self._hold_all(queue.take_unsent())
                    queue = None
                    continue
            self._hold(payload, ms)

    async def push(self, frame: AudioFrame, conn: Connection | None) -> None:
        """`feed`, for callers that await (it never waits)."""
        self.feed(frame, conn)

    def _adopt(self, conn: Connection) -> None:
        """Audio left queued on the previous socket goes first, held like any outage's."""
        conn.audio.cadence_ms = self._opts.append_cadence_ms
        old, self._conn = self._conn, conn
        if old is not None:
            self._hold_front(old.audio.take_unsent())

    def _hold(self, payload: bytes, ms: float) -> None:
        self._held.append((payload, ms))
        self._held_ms += ms
        while self._held_ms > HOLD_MS and self._held:
            dropped = self._held.popleft()[1]
            self._held_ms -= dropped
            self.dropped_ms += dropped

    def _hold_all(self, pieces: list[tuple[bytes, float]]) -> None:
        for payload, ms in pieces:
            self._hold(payload, ms)

    def _hold_front(self, pieces: list[tuple[bytes, float]]) -> None:
        if not pieces:
            return
        rest = list(self._held)
        self._held.clear()
        self._held_ms = 0.0
        self._hold_all(pieces + rest)

    @property
    def held_ms(self) -> float:
        return self._held_ms

    async def flush(self, conn: Connection) -> None:
        """Send what was held, paced; an append leaves the hold only once it was sent."""
        async with self._flushing:
            if conn is not self._conn:
                self._adopt(conn)
            await conn.drain_appends()
            started = time.monotonic()
            sent_ms = 0.0
            while self._held:
                item = self._held[0]
                payload, ms = item
                await conn.send_text(append_message(new_event_id(), payload))
                if self._held and self._held[0] is item:
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
        if self._conn is not None:
            self._conn.audio.clear()
        if self._resampler is not None:
            self._resampler.reset()
