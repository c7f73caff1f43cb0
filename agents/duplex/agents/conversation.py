"""The conversation: one ordered list of items, the single source of truth.

Items are immutable; a change is a new item with the same id. A backend keeps a
mirror of what its server holds and applies :func:`diff` to make it equal.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, TypeAlias

Role = Literal["system", "developer", "user", "assistant"]


def new_item_id(prefix: str = "item") -> str:
    """Ids fit OpenAI's 32-character limit."""
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True)
class TextPart:
    text: str
    type: Literal["text"] = "text"


@dataclass(frozen=True)
class AudioPart:
    """Audio of a message; ``transcript`` is what was said, ``duration_ms`` how long."""

    transcript: str = ""
    duration_ms: float = 0.0
    pcm16: bytes | None = field(default=None, repr=False, compare=False)
    sample_rate: int = 24000
    type: Literal["audio"] = "audio"


ContentPart: TypeAlias = TextPart | AudioPart


@dataclass(frozen=True)
class Message:
    role: Role
    content: tuple[ContentPart, ...] = ()
    id: str = field(default_factory=new_item_id)
    #: False while a reply or transcript is still streaming in.
    complete: bool = True
    #: Milliseconds of audio the caller heard when this assistant message was cut short.
    truncated_ms: float | None = None
    type: Literal["message"] = "message"

    @classmethod
    def text_message(cls, role: Role, text: str, *, id: str | None = None) -> Message:
        return cls(role=role, content=(TextPart(text),), id=id or new_item_id())

    @property
    def text(self) -> str:
        """Text of the message, using the transcript of audio parts."""
        out: list[str] = []
        for part in self.content:
            out.append(part.text if isinstance(part, TextPart) else part.transcript)
        return "".join(out)

    @property
    def audio_ms(self) -> float:
        return sum(p.duration_ms for p in self.content if isinstance(p, AudioPart))


@dataclass(frozen=True)
class FunctionCall:
    call_id: str
    name: str
    arguments: str
    id: str = field(default_factory=new_item_id)
    type: Literal["function_call"] = "function_call"


@dataclass(frozen=True)
class FunctionCallOutput:
    call_id: str
    output: str
    #: True when the output reports an error (exception, timeout, invalid arguments).
    is_error: bool = False
    name: str = ""
    id: str = field(default_factory=new_item_id)
    type: Literal["function_call_output"] = "function_call_output"


Item: TypeAlias = Message | FunctionCall | FunctionCallOutput


@dataclass(frozen=True)
class Delete:
    item_id: str


@dataclass(frozen=True)
class Create:
    item: Item
    #: Id of the item it follows, or None to put it first.
    previous_item_id: str | None


Op: TypeAlias = Delete | Create


class Conversation:
    """Ordered items with unique ids. Mutations keep ids unique and order explicit."""

    def __init__(self, items: Iterable[Item] = ()) -> None:
        self._items: list[Item] = []
        for it in items:
            self.append(it)

    # reading ----------------------------------------------------------------------------
    @property
    def items(self) -> tuple[Item, ...]:
        return tuple(self._items)

    def __iter__(self) -> Iterator[Item]:
        return iter(tuple(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: object) -> bool:
        return any(it.id == item_id for it in self._items)

    def get(self, item_id: str) -> Item | None:
        for it in self._items:
            if it.id == item_id:
                return it
        return None

    def index(self, item_id: str) -> int:
        for i, it in enumerate(self._items):
            if it.id == item_id:
                return i
        raise KeyError(item_id)

    def copy(self) -> Conversation:
        return Conversation(self._items)

    # writing ----------------------------------------------------------------------------
    def append(self, item: Item) -> Item:
        if item.id in self:
            raise ValueError(f"duplicate item id {item.id!r}")
        self._items.append(item)
        return item

    def insert_after(self, previous_item_id: str | None, item: Item) -> Item:
        """Insert after ``previous_item_id``; None puts the item first. Unknown ids append."""
        if item.id in self:
            raise ValueError(f"duplicate item id {item.id!r}")
        if previous_item_id is None:
            self._items.insert(0, item)
        elif previous_item_id in self:
            self._items.insert(self.index(previous_item_id) + 1, item)
        else:
            self._items.append(item)
        return item

    def replace(self, item: Item) -> Item:
        """Swap in a new version of an item, keeping its place."""
        self._items[self.index(item.id)] = item
        return item

    def upsert(self, item: Item, previous_item_id: str | None = None) -> Item:
        if item.id in self:
            return self.replace(item)
        return self.insert_after(previous_item_id, item) if previous_item_id else self.append(item)

    def remove(self, item_id: str) -> Item | None:
        for i, it in enumerate(self._items):
            if it.id == item_id:
                return self._items.pop(i)
        return None

    def apply(self, event: object) -> Literal["added", "updated", "deleted"] | None:
        """Mirror a backend's ItemAdded / ItemUpdated / ItemDeleted; returns what changed.

        An update of an item no longer held is ignored (a late update must not revive a
        deleted item); an ItemAdded of an item already held replaces it in place.
        """
        from .backend import ItemAdded, ItemDeleted, ItemUpdated

        if isinstance(event, ItemAdded):
            item = event.item
            existing = self.get(item.id)
            if existing is None:
                if event.previous_item_id is not None:
                    self.insert_after(event.previous_item_id, item)
                else:
                    self.append(item)
                return "added"
            if existing == item:
                return None
            self.replace(item)
            return "updated"
        if isinstance(event, ItemUpdated):
            existing = self.get(event.item.id)
            if existing is None or existing == event.item:
                return None
            self.replace(event.item)
            return "updated"
        if isinstance(event, ItemDeleted):
            return "deleted" if self.remove(event.item_id) is not None else None
        raise TypeError(f"not an item event: {type(event).__name__}")

    def add_message(self, role: Role, text: str) -> Message:
        msg = Message.text_message(role, text)
        self.append(msg)
        return msg

    def truncate_message(self, item_id: str, played_ms: float, heard_text: str | None) -> None:
        item = self.get(item_id)
        if not isinstance(item, Message):
            return
        parts: list[ContentPart] = []
        for p in item.content:
            if isinstance(p, AudioPart):
                keep = p.transcript if heard_text is None else heard_text
                parts.append(replace(p, transcript=keep, duration_ms=min(p.duration_ms, played_ms)))
            else:
                parts.append(p if heard_text is None else TextPart(heard_text))
        self.replace(replace(item, content=tuple(parts), truncated_ms=played_ms, complete=True))


def diff(remote: Sequence[Item], local: Sequence[Item]) -> list[Op]:
    """The fewest deletes and creates that turn ``remote`` into ``local``.

    Items are kept when equal and in the same relative order (the longest common
    subsequence). An item whose content changed is deleted and created again,
    because realtime servers cannot edit an item in place. Creates are in
    ``local`` order, each naming the item it follows, so they can be sent as is.
    """
    local_ids = [it.id for it in local]
    if len(set(local_ids)) != len(local_ids):
        raise ValueError("local conversation has duplicate ids")
    # Strip the common prefix and suffix first: the usual case is an append.
    start = 0
    while start < len(remote) and start < len(local) and remote[start] == local[start]:
        start += 1
    end_r, end_l = len(remote), len(local)
    while end_r > start and end_l > start and remote[end_r - 1] == local[end_l - 1]:
        end_r -= 1
        end_l -= 1
    mid_r, mid_l = remote[start:end_r], local[start:end_l]
    keep_r, keep_l = _lcs(mid_r, mid_l)

    ops: list[Op] = [Delete(it.id) for i, it in enumerate(mid_r) if i not in keep_r]
    for i, it in enumerate(mid_l):
        if i in keep_l:
            continue
        j = start + i
        ops.append(Create(it, local[j - 1].id if j > 0 else None))
    return ops


def _lcs(a: Sequence[Item], b: Sequence[Item]) -> tuple[set[int], set[int]]:
    """Indices of a longest common subsequence of equal items in ``a`` and ``b``."""
    if not a or not b:
        return set(), set()
    n, m = len(a), len(b)
    # Only items that exist on both sides (by id and content) can match.
    in_b = {(it.id, it) for it in b}
    table = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        row, nxt = table[i], table[i + 1]
        ai = a[i]
        matchable = (ai.id, ai) in in_b
        for j in range(m - 1, -1, -1):
            if matchable and ai == b[j]:
                row[j] = nxt[j + 1] + 1
            else:
                row[j] = max(nxt[j], row[j + 1])
    keep_a: set[int] = set()
    keep_b: set[int] = set()
    i = j = 0
    while i < n and j < m:
        if a[i] == b[j]:
            keep_a.add(i)
            keep_b.add(j)
            i += 1
            j += 1
        elif table[i + 1][j] >= table[i][j + 1]:
            i += 1
        else:
            j += 1
    return keep_a, keep_b


def apply(remote: Sequence[Item], ops: Sequence[Op]) -> list[Item]:
    """Apply ops the way a realtime server does; used by mirrors and tests."""
    items = list(remote)
    for op in ops:
        if isinstance(op, Delete):
            items = [it for it in items if it.id != op.item_id]
        else:
            if any(it.id == op.item.id for it in items):
                raise ValueError(f"item {op.item.id!r} already exists")
            if op.previous_item_id is None:
                items.insert(0, op.item)
            else:
                idx = next((k for k, it in enumerate(items) if it.id == op.previous_item_id), None)
                if idx is None:
                    raise ValueError(f"previous item {op.previous_item_id!r} not found")
                items.insert(idx + 1, op.item)
    return items
