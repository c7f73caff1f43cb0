"""Bookkeeping of replies: which is active, what it said, when its moments happened.

At most one reply is active; `ResponseTracker.busy` is what the reply policy reads.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Literal

from .backend import ResponseDone, ResponseHandle

#: What `generate_reply` does while another reply is active.
ReplyPolicy = Literal["queue", "cancel_existing", "reject"]


@dataclass(eq=False)
class ResponseState:
    response_id: str
    request_id: str | None
    requested_at: float | None
    started_at: float = field(default_factory=time.monotonic)
    first_delta_at: float | None = None
    first_played_at: float | None = None
    #: When the caller's speech that prompted this reply ended (monotonic).
    speech_end_at: float | None = None
    items: list[str] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    result: ResponseDone | None = None
    interrupted: bool = False
    interruption_ms: float | None = None
    played_ms: float = 0.0
    metrics_sent: bool = False
    #: It was interrupted before it started: cancel it as soon as it does.
    cancel_on_start: bool = False


class ResponseTracker:
    def __init__(self) -> None:
        self._by_id: dict[str, ResponseState] = {}
        self._pending: list[tuple[ResponseHandle, float]] = []
        self.current: ResponseState | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.next_speech_end_at: float | None = None
        self._cancel_on_start: set[str] = set()

    @property
    def busy(self) -> bool:
        return bool(self._pending) or (self.current is not None and not self.current.done.is_set())

    async def wait_idle(self) -> None:
        while self.busy:
            self._idle.clear()
            await self._idle.wait()

    def requested(self, handle: ResponseHandle) -> None:
        self._pending.append((handle, time.monotonic()))
        self._idle.clear()

    def request_failed(self, handle: ResponseHandle) -> None:
        self._pending = [(h, t) for h, t in self._pending if h is not handle]
        self._update_idle()

    def get(self, response_id: str) -> ResponseState | None:
        return self._by_id.get(response_id)

    def cancel_pending(self) -> bool:
        """Interrupt replies requested but not started yet: they are cut as soon as they start."""
        self._cancel_on_start.update(h.request_id for h, _ in self._pending)
        return bool(self._pending)

    def started(self, response_id: str, request_id: str | None) -> ResponseState:
        requested_at = None
        for i, (h, t) in enumerate(self._pending):
            if (request_id is not None and h.request_id == request_id) or (
                request_id is None and i == 0
            ):
                requested_at, request_id = t, h.request_id
                del self._pending[i]
                break
        state = self._by_id.get(response_id)
        if state is None:
            state = ResponseState(response_id, request_id, requested_at)
            if request_id is not None and request_id in self._cancel_on_start:
                self._cancel_on_start.discard(request_id)
                state.cancel_on_start = True
            state.speech_end_at, self.next_speech_end_at = self.next_speech_end_at, None
            self._by_id[response_id] = state
        self.current = state
        return state

    def finished(self, event: ResponseDone) -> ResponseState:
        state = self._by_id.get(event.response_id) or self.started(event.response_id, None)
        state.result = event
        state.done.set()
        self._update_idle()
        return state

    def forget(self, response_id: str) -> None:
        """Drop a reply that is finished and accounted for, so long calls stay small."""
        state = self._by_id.pop(response_id, None)
        if state is not None and self.current is state:
            self.current = None

    def _update_idle(self) -> None:
        if not self.busy:
            self._idle.set()
