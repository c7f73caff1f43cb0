"""Which replies exist: requested ones waiting to start, the current one, and by id.

At most one reply is active; `Replies.busy` is what the session's reply policy
reads. Replies are created here and changed only through their own verbs.
"""

from __future__ import annotations

import asyncio
import time

from .backend import ResponseDone, ResponseHandle
from .reply import Reply


class Replies:
    def __init__(self) -> None:
        self._by_id: dict[str, Reply] = {}
        self._pending: list[Reply] = []
        self.current: Reply | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        #: When the caller's last turn ended: the next reply that starts answers it.
        self.next_speech_end_at: float | None = None

    @property
    def busy(self) -> bool:
        return bool(self._pending) or (self.current is not None and self.current.live)

    @property
    def pending(self) -> tuple[Reply, ...]:
        return tuple(self._pending)

    async def wait_idle(self) -> None:
        while self.busy:
            self._idle.clear()
            await self._idle.wait()

    def requested(self, handle: ResponseHandle, *, speech_end_at: float | None = None) -> Reply:
        reply = Reply(
            request_id=handle.request_id,
            requested_at=time.monotonic(),
            speech_end_at=speech_end_at,
        )
        self._pending.append(reply)
        self._idle.clear()
        return reply

    def request_failed(self, reply: Reply) -> None:
        if reply in self._pending:
            self._pending.remove(reply)
            reply.request_failed()
        self._update_idle()

    def get(self, response_id: str) -> Reply | None:
        return self._by_id.get(response_id)

    def owner(self, item_id: str) -> Reply | None:
        """The reply an item belongs to (only replies not yet forgotten)."""
        for reply in reversed(self._by_id.values()):
            if item_id in reply.items:
                return reply
        return None

    def started(self, response_id: str, request_id: str | None) -> Reply:
        """Match a started response to its request (None: server-initiated, or FIFO)."""
        reply = self._by_id.get(response_id)
        if reply is None:
            for i, r in enumerate(self._pending):
                if (request_id is not None and r.request_id == request_id) or (
                    request_id is None and i == 0
                ):
                    reply = self._pending.pop(i)
                    break
            else:
                # Server-initiated (server VAD): it answers the turn that just ended.
                reply = Reply(request_id=request_id)
                speech_end, self.next_speech_end_at = self.next_speech_end_at, None
                reply.start(response_id, speech_end_at=speech_end)
            if reply.response_id is None:
                reply.start(response_id, speech_end_at=None)
            self._by_id[response_id] = reply
        self.current = reply
        return reply

    def finished(self, event: ResponseDone) -> Reply:
        reply = self._by_id.get(event.response_id) or self.started(event.response_id, None)
        reply.finish(event)
        self._update_idle()
        return reply

    def tracked(self) -> list[Reply]:
        """Started replies not yet accounted for, oldest first."""
        return list(self._by_id.values())

    def cancel_pending(self) -> list[Reply]:
        """Interrupt replies requested but not started yet: each is cut as soon as it starts."""
        for r in self._pending:
            r.cancel_when_started()
        return list(self._pending)

    def forget(self, reply: Reply) -> None:
        """Drop a reply that is finished and accounted for, so long calls stay small."""
        if reply.response_id is not None:
            self._by_id.pop(reply.response_id, None)
        if self.current is reply:
            self.current = None

    def _update_idle(self) -> None:
        if not self.busy:
            self._idle.set()
