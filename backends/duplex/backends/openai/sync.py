"""Plan a conversation sync: which deletes and creates make the server equal the session.

Two things make this more than `diff(mirror, local)`:
- items whose server events the session has not consumed yet (an assistant
  message still in the event queue) must not be deleted or rewritten just
  because the local copy lags behind; the plan treats the mirror's version as
  the local one for them;
- items with nothing a server accepts (an empty message) stay local-only, and
  each create names the nearest preceding item that really exists remotely.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass, field
from typing import Any

from duplex.agents.conversation import Create, Delete, Item, diff
from duplex.agents.errors import BackendErrorException

from .dialect import Dialect
from .items import MAX_ID_LEN, to_wire
from .mirror import Mirror
from .options import RealtimeOptions


@dataclass
class SyncPlan:
    #: Remote deletes, by item id.
    deletes: list[str] = field(default_factory=list)
    #: (item, wire item, remote previous id or None for first, local previous id).
    creates: list[tuple[Item, dict[str, Any], str | None, str | None]] = field(default_factory=list)
    #: Mirror-only changes for items that never go on the wire.
    local_deletes: list[str] = field(default_factory=list)
    local_creates: list[tuple[Item, str | None]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.deletes or self.creates or self.local_deletes or self.local_creates)


def _view(
    mirror: Mirror, local: Sequence[Item], undelivered: Container[str], unseen: Container[str]
) -> list[Item]:
    """``local`` with not-yet-delivered server changes applied, so the plan never undoes them.

    An item the session has seen and removed is deleted even if an update of it is
    still queued; one it has not seen yet (its ItemAdded is queued) is kept.
    """
    view: list[Item] = []
    for it in local:
        if it.id in undelivered:
            m = mirror.get(it.id)
            if m is not None:
                view.append(m)
            continue
        view.append(it)
    ids = {it.id for it in view}
    mirror_items = mirror.items
    for idx, m in enumerate(mirror_items):
        if m.id in unseen and m.id not in ids:
            prev = mirror_items[idx - 1].id if idx else None
            pos = 0
            if prev is not None:
                pos = next((k + 1 for k, it in enumerate(view) if it.id == prev), len(view))
            view.insert(pos, m)
            ids.add(m.id)
    return view


def plan_sync(
    mirror: Mirror,
    local: Sequence[Item],
    undelivered: Container[str],
    unseen: Container[str],
    dialect: Dialect,
    opts: RealtimeOptions,
) -> SyncPlan:
    view = _view(mirror, local, undelivered, unseen)
    ops = diff(mirror.items, view)
    plan = SyncPlan()
    remote = mirror.remote_ids()
    for op in ops:
        if isinstance(op, Delete):
            if op.item_id in remote:
                plan.deletes.append(op.item_id)
                remote.discard(op.item_id)
            else:
                plan.local_deletes.append(op.item_id)
    position = {it.id: k for k, it in enumerate(view)}
    input_pcm16 = opts.input_audio_format == "pcm16"
    for op in ops:
        if not isinstance(op, Create):
            continue
        item = op.item
        wire = to_wire(item, dialect, input_pcm16=input_pcm16)
        if wire is None:
            plan.local_creates.append((item, op.previous_item_id))
            continue
        if len(item.id) > MAX_ID_LEN:
            raise BackendErrorException(
                f"item id {item.id!r} is longer than {MAX_ID_LEN} characters; the server "
                "would refuse it",
                code="invalid_item_id",
            )
        remote_prev = None
        for k in range(position[item.id] - 1, -1, -1):
            if view[k].id in remote:
                remote_prev = view[k].id
                break
        plan.creates.append((item, wire, remote_prev, op.previous_item_id))
        remote.add(item.id)
    return plan
