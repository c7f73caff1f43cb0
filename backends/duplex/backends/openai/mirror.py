"""What the server holds: the conversation mirror and the acknowledged requests in flight.

The mirror stores the very item objects the session's `Conversation` holds, so
`diff(mirror, local)` is empty when both agree. Items that cannot exist on the
wire (a message with no content) are kept as *local-only* entries: present for
the diff, never sent, never used as a ``previous_item_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from duplex.agents.conversation import Item
from duplex.agents.errors import BackendErrorException


@dataclass
class _Entry:
    item: Item
    remote: bool


class Mirror:
    """Items in server order, plus an id index: lookups are O(1) and appending (what a
    server does with new items) is too, so 20,000 server-made items stay cheap."""

    def __init__(self) -> None:
        self._entries: list[_Entry] = []
        self._by_id: dict[str, _Entry] = {}

    @property
    def items(self) -> tuple[Item, ...]:
        return tuple(e.item for e in self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, str) and item_id in self._by_id

    def _index(self, item_id: str) -> int | None:
        entry = self._by_id.get(item_id)
        if entry is None:
            return None
        entries = self._entries
        if entries and entries[-1] is entry:
            return len(entries) - 1  # the common case: the newest item
        for i in range(len(entries) - 1, -1, -1):
            if entries[i] is entry:
                return i
        return None

    def get(self, item_id: str) -> Item | None:
        entry = self._by_id.get(item_id)
        return None if entry is None else entry.item

    def is_remote(self, item_id: str) -> bool:
        entry = self._by_id.get(item_id)
        return entry is not None and entry.remote

    def remote_ids(self) -> set[str]:
        return {e.item.id for e in self._entries if e.remote}

    def previous_of(self, item_id: str) -> str | None:
        i = self._index(item_id)
        return None if not i else self._entries[i - 1].item.id

    def last_id(self) -> str | None:
        return self._entries[-1].item.id if self._entries else None

    def insert(
        self, item: Item, after: str | None, *, remote: bool = True, first: bool = False
    ) -> None:
        """Insert after ``after``; with ``after`` None: first when ``first``, else appended.

        An unknown ``after`` appends, which is where a server puts new output anyway.
        """
        if item.id in self:
            self.replace(item)
            return
        entry = _Entry(item, remote)
        self._by_id[item.id] = entry
        if after is None:
            if first:
                self._entries.insert(0, entry)
            else:
                self._entries.append(entry)
            return
        i = self._index(after)
        if i is None or i == len(self._entries) - 1:
            self._entries.append(entry)
            return
        self._entries.insert(i + 1, entry)

    def replace(self, item: Item) -> None:
        entry = self._by_id.get(item.id)
        if entry is not None:
            entry.item = item

    def remove(self, item_id: str) -> Item | None:
        i = self._index(item_id)
        if i is None:
            return None
        entry = self._entries.pop(i)
        del self._by_id[item_id]
        return entry.item

    def clear(self) -> None:
        self._entries.clear()
        self._by_id.clear()


@dataclass(eq=False)
class Pending:
    """One acknowledged request: settled by the server's ack, or by an error naming its event."""

    kind: str
    key: str
    event_id: str
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    payload: Any = None


class PendingOps:
    """Requests in flight, findable by the ack that settles them or the event id an error names."""

    def __init__(self) -> None:
        self._by_event: dict[str, Pending] = {}
        self._by_key: dict[tuple[str, str], deque[Pending]] = {}

    def __len__(self) -> int:
        return len(self._by_event)

    def add(self, kind: str, key: str, event_id: str, payload: Any = None) -> Pending:
        p = Pending(kind, key, event_id, payload=payload)
        self._by_event[event_id] = p
        self._by_key.setdefault((kind, key), deque()).append(p)
        return p

    def peek(self, kind: str, key: str) -> Pending | None:
        q = self._by_key.get((kind, key))
        return q[0] if q else None

    def _drop(self, p: Pending) -> None:
        self._by_event.pop(p.event_id, None)
        q = self._by_key.get((p.kind, p.key))
        if q is not None:
            with contextlib.suppress(ValueError):
                q.remove(p)
            if not q:
                del self._by_key[(p.kind, p.key)]

    def resolve(self, kind: str, key: str, value: Any = None) -> Pending | None:
        """Settle the oldest request of ``kind`` on ``key``; None when nothing waited for it."""
        p = self.peek(kind, key)
        if p is None:
            return None
        self._drop(p)
        if not p.future.done():
            p.future.set_result(value)
        return p

    def fail(self, event_id: str, exc: BaseException) -> Pending | None:
        p = self._by_event.get(event_id)
        if p is None:
            return None
        self._drop(p)
        if not p.future.done():
            p.future.set_exception(exc)
            p.future.exception()  # the waiter re-raises it; nobody else must be warned
        return p

    def forget(self, future: asyncio.Future[Any]) -> None:
        """Stop tracking a request nobody waits for any more (timed out)."""
        for p in list(self._by_event.values()):
            if p.future is future:
                self._drop(p)

    def fail_all(self, exc: BaseException) -> None:
        for p in list(self._by_event.values()):
            self._drop(p)
            if not p.future.done():
                p.future.set_exception(exc)
                p.future.exception()


async def settle(futures: Sequence[asyncio.Future[Any]], ops: PendingOps, timeout: float) -> None:
    """Wait for acks; the first server error is raised, the timeout is only a last resort."""
    if not futures:
        return
    done, pending = await asyncio.wait(futures, timeout=timeout)
    first: BaseException | None = None
    for f in futures:
        if f in done and f.exception() is not None and first is None:
            first = f.exception()
    for f in pending:
        ops.forget(f)
        f.cancel()
    if first is not None:
        raise first
    if pending:
        raise BackendErrorException(
            f"the realtime server did not acknowledge {len(pending)} request(s) in {timeout:.0f} s",
            code="timeout",
        )
