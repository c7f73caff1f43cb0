"""Shared state of one session: mirror, requests, responses, the event queue.

Both the server-event handlers (`dispatch`) and the public methods (`session`)
read and change it; keeping it in one plain object keeps each of those modules
about one job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from duplex.agents.backend import BackendEvent, ItemAdded, ItemDeleted, ItemUpdated
from duplex.agents.conversation import Item

from .dialect import Dialect
from .metrics import ResponseMetrics
from .mirror import Mirror, PendingOps
from .options import RealtimeOptions
from .responses import Responses

log = logging.getLogger("duplex.backends.openai")

_END = object()
#: How long a rollover waits for a committed turn's transcript.
TRANSCRIPT_WAIT_S = 10.0
#: Caller turns remembered while their transcripts are pending.
MAX_USER_TURNS = 32
#: How long a rollover waits for a committed turn's server reply or a tool's output.
REPLY_WAIT_S = 10.0
TOOL_WAIT_S = 60.0
#: Distinct warning keys logged one by one; past this, one line per 1,000 suppressed.
MAX_LOG_KEYS = 64


@dataclass
class UserTurn:
    """A committed caller turn whose transcript may still be arriving."""

    item_id: str
    audio_ms: float = 0.0
    partial: str = ""
    done: bool = False
    created_at: float = field(default_factory=time.monotonic)

    @property
    def waiting(self) -> bool:
        """Its transcript may still come (a server that never transcribes must not block)."""
        return not self.done and time.monotonic() - self.created_at < TRANSCRIPT_WAIT_S


class SessionState:
    def __init__(
        self, opts: RealtimeOptions, dialect: Dialect, send_soon: Callable[[dict[str, Any]], None]
    ):
        self.opts = opts
        self.dialect = dialect
        self.send_soon = send_soon
        self.mirror = Mirror()
        self.ops = PendingOps()
        self.responses = Responses()
        self.metrics: deque[ResponseMetrics] = deque(maxlen=256)
        self.user_turns: dict[str, UserTurn] = {}
        self.speech_start_ms: float | None = None
        self.user_speaking = False
        #: Milliseconds appended since the last commit or clear (input audio time).
        self.buffer_ms = 0.0
        self.input_ms = 0.0
        self.fatal: tuple[str, str] | None = None
        self.errors_seen: Counter[str] = Counter()
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        #: The session's handler for events offered straight from the reader
        #: (`BackendSession.deliver_nowait`); used only while the consumer waits in
        #: `next_event` with nothing queued, so events keep their order.
        self.direct: Callable[[BackendEvent], bool] | None = None
        self._consumer_waiting = False
        #: Ids with an item event still in the queue: a sync must not undo what the
        #: session has not seen yet (``unseen``: its ItemAdded is among them).
        self.undelivered: Counter[str] = Counter()
        self.unseen: Counter[str] = Counter()
        self._changed = asyncio.Event()
        self._logged: set[str] = set()
        self._suppressed = 0
        #: A committed caller turn the server will answer by itself (server VAD), since when.
        self.reply_due_at: float | None = None
        #: Function calls handed to the session whose follow-up reply has not started yet
        #: (``outputs_sent``: those whose output the server already holds).
        self.open_calls: dict[str, float] = {}
        self.outputs_sent: set[str] = set()

    # events ------------------------------------------------------------------------------
    def emit(self, event: BackendEvent) -> None:
        if isinstance(event, (ItemAdded, ItemUpdated)):
            self.undelivered[event.item.id] += 1
            if isinstance(event, ItemAdded):
                self.unseen[event.item.id] += 1
        elif isinstance(event, ItemDeleted):
            self.undelivered[event.item_id] += 1
        elif (
            self.direct is not None
            and self._consumer_waiting
            and self._queue.empty()
            and self.direct(event)
        ):
            return
        self._queue.put_nowait(event)

    def end(self) -> None:
        self._queue.put_nowait(_END)

    async def next_event(self) -> BackendEvent | None:
        while True:
            self._consumer_waiting = True
            try:
                ev = await self._queue.get()
            finally:
                self._consumer_waiting = False
            if ev is _END:
                self._queue.put_nowait(_END)  # later readers end too
                return None
            if isinstance(ev, ItemUpdated) and ev.item.id not in self.mirror:
                # The item was deleted meanwhile (the session removed it): do not revive it.
                self.delivered(ev)
                continue
            return ev  # type: ignore[return-value]

    def delivered(self, event: BackendEvent) -> None:
        key = None
        if isinstance(event, (ItemAdded, ItemUpdated)):
            key = event.item.id
        elif isinstance(event, ItemDeleted):
            key = event.item_id
        if key is not None:
            _decrement(self.undelivered, key)
            if isinstance(event, ItemAdded):
                _decrement(self.unseen, key)

    def user_turn(self, item_id: str) -> UserTurn:
        turn = self.user_turns.get(item_id)
        if turn is None:
            turn = self.user_turns[item_id] = UserTurn(item_id)
            while len(self.user_turns) > MAX_USER_TURNS:
                del self.user_turns[next(iter(self.user_turns))]
        return turn

    # mirror changes the session must see --------------------------------------------------
    def add_item(self, item: Item, after: str | None) -> None:
        """A server-made item; with no (or an unknown) predecessor it goes last, as the
        session appends an `ItemAdded` without one."""
        self.mirror.insert(item, after)
        self.emit(ItemAdded(item, self.mirror.previous_of(item.id)))

    def update_item(self, item: Item) -> None:
        if item.id in self.mirror:
            self.mirror.replace(item)
            self.emit(ItemUpdated(item))

    def delete_item(self, item_id: str) -> None:
        if self.mirror.remove(item_id) is not None:
            self.emit(ItemDeleted(item_id))

    # change notification -----------------------------------------------------------------
    def changed(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    async def wait_changed(self, timeout: float | None) -> None:
        """Until the next change, or ``timeout`` seconds (None: no limit)."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    @property
    def server_replies(self) -> bool:
        td = self.opts.turn_detection
        return td is not None and getattr(td, "create_response", True) is not False

    @property
    def quiet(self) -> bool:
        """Nothing would be lost by reconnecting now (rollover): no caller turn committed
        and not yet answered, no reply active or requested, no tool output outstanding."""
        now = time.monotonic()
        return not (
            self.responses.busy
            or self.responses.queued
            or len(self.ops)
            or self.user_speaking
            or (self.reply_due_at is not None and now - self.reply_due_at < REPLY_WAIT_S)
            or any(now - t < TOOL_WAIT_S for t in self.open_calls.values())
            or any(t.waiting for t in self.user_turns.values())
        )

    def log_once(self, key: str, msg: str, *args: Any, level: int = logging.WARNING) -> None:
        """Log the first occurrence per key; a flood of new keys becomes one line per 1,000."""
        if key in self._logged:
            return
        if len(self._logged) < MAX_LOG_KEYS:
            self._logged.add(key)
            log.log(level, msg, *args)
            return
        self._suppressed += 1
        if self._suppressed % 1000 == 1:
            log.log(level, "realtime: %d more distinct anomalies not logged", self._suppressed)


def _decrement(counter: Counter[str], key: str) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]
