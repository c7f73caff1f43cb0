"""Shared state of one session: mirror, requests, responses, the event queue.

Both the server-event handlers (`dispatch`) and the public methods (`session`)
read and change it; keeping it in one plain object keeps each of those modules
about one job.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass
class UserTurn:
    """A committed caller turn whose transcript may still be arriving."""

    item_id: str
    audio_ms: float = 0.0
    partial: str = ""
    done: bool = False


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
        #: Ids with an item event still in the queue: a sync must not undo what the
        #: session has not seen yet.
        self.undelivered: Counter[str] = Counter()
        self._changed = asyncio.Event()
        self._logged: set[str] = set()

    # events ------------------------------------------------------------------------------
    def emit(self, event: BackendEvent) -> None:
        if isinstance(event, (ItemAdded, ItemUpdated)):
            self.undelivered[event.item.id] += 1
        elif isinstance(event, ItemDeleted):
            self.undelivered[event.item_id] += 1
        self._queue.put_nowait(event)

    def end(self) -> None:
        self._queue.put_nowait(_END)

    async def next_event(self) -> BackendEvent | None:
        ev = await self._queue.get()
        if ev is _END:
            self._queue.put_nowait(_END)  # later readers end too
            return None
        return ev  # type: ignore[return-value]

    def delivered(self, event: BackendEvent) -> None:
        key = None
        if isinstance(event, (ItemAdded, ItemUpdated)):
            key = event.item.id
        elif isinstance(event, ItemDeleted):
            key = event.item_id
        if key is not None:
            self.undelivered[key] -= 1
            if self.undelivered[key] <= 0:
                del self.undelivered[key]

    # mirror changes the session must see --------------------------------------------------
    def add_item(self, item: Item, after: str | None, *, first: bool = False) -> None:
        self.mirror.insert(item, after, first=first)
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

    @property
    def quiet(self) -> bool:
        """Nothing would be lost by reconnecting now (rollover)."""
        return not (
            self.responses.busy
            or self.responses.queued
            or len(self.ops)
            or self.user_speaking
            or any(not t.done for t in self.user_turns.values())
        )

    def log_once(self, key: str, msg: str, *args: Any, level: int = logging.WARNING) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.log(level, msg, *args)
