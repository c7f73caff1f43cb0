"""`input_audio_buffer.append` messages: built from a template, on a cadence, merged when behind.

One append per 20 ms frame per session is most of what a busy process writes to
its sockets. Frames leave in appends of ``cadence_ms``: at the default 20 ms (or
less) each frame goes at once; 40 ms halves the writes and holds every other frame
up to 20 ms. Measured (2026-12-01, 2 cores, 100 sessions, quiet machine), 40 ms
saved 3-6 % of the process's CPU (0.0070 vs 0.0074-0.0076 s per session-second;
`bench.input_cpu` 27.9 vs 31.3 us per frame) and added 10-30 ms to the input
path's p99, so the default keeps the latency. When the event loop is late,
frames merge further, into appends of up to
`MAX_APPEND_MS`, in order, never split or dropped. A frame is held at most until
that much audio would have arrived at 1x (a shared sweep sees to it if frames
stop), and any other event (a commit) first writes out what is held.

Messages are formatted without a JSON encoder: base64 needs no escaping and the
event id is ours, so the template is always valid JSON.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import secrets
import weakref
from collections import deque
from typing import TYPE_CHECKING

from duplex.agents.loop import LoopLag, loop_lag

if TYPE_CHECKING:
    from .connection import Connection

#: The most audio one append carries when frames are merged.
MAX_APPEND_MS = 60.0
#: Audio per append while the loop keeps up: one 20 ms frame, sent at once (see above).
DEFAULT_CADENCE_MS = 20.0
#: How long past its cadence a held frame waits for the next frame before it goes alone
#: (frames of a busy process arrive with a few ms of jitter).
CADENCE_GRACE_MS = 10.0
#: Audio that may wait for a slow socket; past it the oldest goes (newest audio wins).
MAX_QUEUED_MS = 10_000.0
#: The loop counts as behind when its timers run this late (seconds). Merging adds up
#: to 40 ms to a frame's trip, so it starts only once the loop itself is this late.
BEHIND_S = 0.015
_EPS = 1e-6

_TEMPLATE = '{"event_id":"%s","type":"input_audio_buffer.append","audio":"%s"}'

#: Event ids: a random per-process prefix and a counter (unique in the process, cheap;
#: uuid4 per 20 ms append was measurable at scale). Every event of the backend uses them.
_ID_PREFIX = f"evt_{secrets.token_hex(6)}_"
_ids = itertools.count(1)


def new_event_id() -> str:
    return f"{_ID_PREFIX}{next(_ids):x}"


def append_message(event_id: str, payload: bytes) -> str:
    """The append event for ``payload`` (wire-format audio bytes) as JSON text."""
    return _TEMPLATE % (event_id, base64.b64encode(payload).decode("ascii"))


class AppendQueue:
    """Caller audio waiting to leave on one connection, in order (bounded by the merge rule).

    `add` writes at once when the connection is free and the loop is on time; the
    connection's `send` empties it first, so appends never pass a later event.
    """

    def __init__(
        self,
        conn: Connection,
        lag: LoopLag | None = None,
        *,
        cadence_ms: float = DEFAULT_CADENCE_MS,
    ) -> None:
        self._conn = conn
        #: Audio per append while the loop is on time (<= one frame: each frame at once).
        self.cadence_ms = cadence_ms
        self._lag = lag or loop_lag()
        self._pieces: deque[tuple[bytes, float]] = deque()
        self._ms = 0.0
        self._due_at: float | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._sweeper: _Sweeper | None = None
        #: Appends written, and how many of them carried more than one frame.
        self.sent = 0
        self.merged = 0
        #: Audio dropped because the socket fell more than `MAX_QUEUED_MS` behind.
        self.dropped_ms = 0.0

    @property
    def pending_ms(self) -> float:
        return self._ms if self._pieces else 0.0

    @property
    def pending(self) -> bool:
        return bool(self._pieces)

    def add(self, payload: bytes, ms: float) -> None:
        """Queue one frame (at most `MAX_APPEND_MS`); raises ConnectionError if the socket is gone.

        On an error the audio stays queued: `take_unsent` hands it back.
        """
        self._pieces.append((payload, ms))
        self._ms += ms
        if not self._conn.writable():
            while self._ms > MAX_QUEUED_MS and len(self._pieces) > 1:
                self._ms -= (old := self._pieces.popleft()[1])
                self.dropped_ms += old
            self._flush_later()
        elif self._ms + _EPS >= MAX_APPEND_MS:
            self.write_ready()
        else:
            behind = self._lag.behind(BEHIND_S)
            if not behind and self._ms + _EPS >= self.cadence_ms:
                self.write_ready()
                return
            if self._due_at is not None:
                return
            # Wait for the next frame(s), but no longer than the rest of the append takes
            # to arrive at 1x: the cadence's (plus a little grace) while on time, else up
            # to MAX_APPEND_MS (checked by one shared sweep per loop: no timer per batch).
            wait_ms = MAX_APPEND_MS - self._ms
            if not behind:
                wait_ms = min(wait_ms, self.cadence_ms - self._ms + CADENCE_GRACE_MS)
            sweeper = self._sweeper
            if sweeper is None:
                sweeper = self._sweeper = _sweeper(asyncio.get_running_loop())
            self._due_at = sweeper.time() + wait_ms / 1000.0
            sweeper.watch(self)

    def write_ready(self) -> None:
        """Write what is queued while the connection takes writes without waiting."""
        self._cancel_due()
        while self._pieces and self._conn.writable():
            group = self.pop_group()
            try:
                self._conn.write_nowait(self.format(group))
            except BaseException:
                self.unpop(group)
                raise
        if self._pieces:
            self._flush_later()

    def pop_group(self) -> list[tuple[bytes, float]]:
        """The oldest frames that fit in one append (at least one frame)."""
        group = [self._pieces.popleft()]
        ms = group[0][1]
        while self._pieces and ms + self._pieces[0][1] <= MAX_APPEND_MS + _EPS:
            piece = self._pieces.popleft()
            group.append(piece)
            ms += piece[1]
        self._ms = self._ms - ms if self._pieces else 0.0  # no float residue when empty
        return group

    def unpop(self, group: list[tuple[bytes, float]]) -> None:
        self._pieces.extendleft(reversed(group))
        self._ms += sum(ms for _, ms in group)

    def format(self, group: list[tuple[bytes, float]]) -> str:
        self.sent += 1
        if len(group) > 1:
            self.merged += 1
            payload = b"".join(p for p, _ in group)
        else:
            payload = group[0][0]
        return append_message(new_event_id(), payload)

    def take_unsent(self) -> list[tuple[bytes, float]]:
        """Remove and return the queued audio (the socket died; the uplink holds it)."""
        self._cancel_due()
        out = list(self._pieces)
        self._pieces.clear()
        self._ms = 0.0
        return out

    def clear(self) -> None:
        self.take_unsent()

    def close(self) -> None:
        self._cancel_due()
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None

    def _due(self) -> None:
        self._due_at = None
        if not self._pieces:
            return
        if self._conn.writable():
            # on an error the audio stays queued for take_unsent; the session sees the close
            with contextlib.suppress(ConnectionError, RuntimeError):
                self.write_ready()
        else:
            self._flush_later()

    def _cancel_due(self) -> None:
        self._due_at = None

    def _flush_later(self) -> None:
        """The connection is busy (a write waiting on the socket, or an event being sent)."""
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):  # kept for take_unsent
            await self._conn.drain_appends()


class _Sweeper:
    """Writes out merges whose time is up: one timer per loop, ticking only while needed."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queues: set[AppendQueue] = set()
        self._handle: asyncio.TimerHandle | None = None

    def time(self) -> float:
        return self._loop.time()

    def watch(self, q: AppendQueue) -> None:
        self._queues.add(q)
        if self._handle is None:
            self._handle = self._loop.call_later(_SWEEP_S, self._sweep)

    def _sweep(self) -> None:
        self._handle = None
        now = self._loop.time() + _SWEEP_S / 2  # due before the next sweep: now
        for q in list(self._queues):
            due = q._due_at
            if due is None:
                self._queues.discard(q)
            elif due <= now:
                self._queues.discard(q)
                q._due()
        if self._queues:
            self._handle = self._loop.call_later(_SWEEP_S, self._sweep)


#: How often waiting merges are checked (a merge waits at most this much past its time).
_SWEEP_S = 0.01
_sweepers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Sweeper] = (
    weakref.WeakKeyDictionary()
)


def _sweeper(loop: asyncio.AbstractEventLoop) -> _Sweeper:
    sw = _sweepers.get(loop)
    if sw is None:
        sw = _sweepers[loop] = _Sweeper(loop)
    return sw
