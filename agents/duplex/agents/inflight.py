"""Item events a backend emitted that its session has not consumed yet.

A backend that holds the conversation itself (the cascade, a scripted one) must
not let a `sync` undo what the session simply has not read yet: an item whose
`ItemAdded` is still queued is kept where the backend has it, and an item with
updates in flight is taken as the backend holds it.
"""

from __future__ import annotations

from collections.abc import Sequence

from .backend import BackendEvent, ItemAdded, ItemUpdated
from .conversation import Item


class InFlight:
    def __init__(self) -> None:
        self._unseen: set[str] = set()
        self._updates: dict[str, int] = {}

    def emitted(self, event: BackendEvent) -> None:
        if isinstance(event, (ItemAdded, ItemUpdated)):
            self._updates[event.item.id] = self._updates.get(event.item.id, 0) + 1
        if isinstance(event, ItemAdded):
            self._unseen.add(event.item.id)

    def delivered(self, event: BackendEvent) -> None:
        if isinstance(event, ItemAdded):
            self._unseen.discard(event.item.id)
        if isinstance(event, (ItemAdded, ItemUpdated)):
            left = self._updates.get(event.item.id, 1) - 1
            if left > 0:
                self._updates[event.item.id] = left
            else:
                self._updates.pop(event.item.id, None)

    def local_view(self, held: Sequence[Item], local: Sequence[Item]) -> list[Item]:
        """``local`` as the session will see it once it has read what is in flight."""
        by_id = {it.id: it for it in held}
        out = [by_id[it.id] if self._updates.get(it.id) and it.id in by_id else it for it in local]
        ids = {it.id for it in out}
        for idx, item in enumerate(held):
            if item.id in self._unseen and item.id not in ids:
                before = [p.id for p in held[:idx] if p.id in ids]
                pos = 0 if not before else [it.id for it in out].index(before[-1]) + 1
                out.insert(pos, item)
                ids.add(item.id)
        return out
