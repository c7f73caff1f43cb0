"""Conversation edits and the diff a backend uses to make its server's copy equal ours."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from duplex.agents.conversation import (
    AudioPart,
    Conversation,
    Create,
    Delete,
    FunctionCall,
    FunctionCallOutput,
    Item,
    Message,
    Op,
    TextPart,
    apply,
    diff,
)

PROPERTY = settings(max_examples=300, derandomize=True, deadline=None)
POOL = [f"item_{k}" for k in range(10)]


def make_item(item_id: str, version: int) -> Item:
    """The same id always has the same kind; ``version`` changes its content."""
    kind = int(item_id.rsplit("_", 1)[1]) % 3
    if kind == 0:
        return Message.text_message("user", f"text v{version}", id=item_id)
    if kind == 1:
        return FunctionCall(call_id=f"call_{item_id}", name="f", arguments=f'{{"v": {version}}}',
                            id=item_id)  # fmt: skip
    return FunctionCallOutput(call_id=f"call_{item_id}", output=f"v{version}", id=item_id)


def items_from(pairs: list[tuple[str, int]]) -> list[Item]:
    return [make_item(i, v) for i, v in pairs]


@st.composite
def independent_lists(draw: st.DrawFn) -> tuple[list[Item], list[Item]]:
    """Two unrelated lists over a small id pool: shared ids, reorders, changed content."""
    lists = []
    for _ in range(2):
        ids = draw(st.lists(st.sampled_from(POOL), unique=True, max_size=len(POOL)))
        versions = draw(st.lists(st.integers(0, 1), min_size=len(ids), max_size=len(ids)))
        lists.append(items_from(list(zip(ids, versions, strict=True))))
    return lists[0], lists[1]


@st.composite
def edited_lists(draw: st.DrawFn) -> tuple[list[Item], list[Item]]:
    """A local list made from the remote by the edits a session makes."""
    ids = draw(st.lists(st.sampled_from(POOL), unique=True, max_size=8))
    remote = items_from([(i, 0) for i in ids])
    local = list(remote)
    fresh = iter(f"new_{k}" for k in range(100))
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(["insert", "delete", "change", "move"]))
        if op == "insert" or not local:
            pos = draw(st.integers(0, len(local)))
            local.insert(pos, Message.text_message("assistant", "hi", id=next(fresh)))
        elif op == "delete":
            local.pop(draw(st.integers(0, len(local) - 1)))
        elif op == "change":
            k = draw(st.integers(0, len(local) - 1))
            local[k] = _changed(local[k])
        else:
            item = local.pop(draw(st.integers(0, len(local) - 1)))
            local.insert(draw(st.integers(0, len(local))), item)
    return remote, local


def _changed(item: Item) -> Item:
    if isinstance(item, Message):
        return replace(item, content=(TextPart(item.text + " (edited)"),))
    if isinstance(item, FunctionCall):
        return replace(item, arguments=item.arguments + " ")
    return replace(item, output=item.output + " (edited)")


def lcs_length(a: list[Item], b: list[Item]) -> int:
    """Textbook dynamic programme, independent of the implementation under test."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def replay(remote: list[Item], ops: list[Op]) -> list[Item]:
    """Apply op by op, checking each against the state a server would be in."""
    state = list(remote)
    for op in ops:
        ids = [it.id for it in state]
        if isinstance(op, Delete):
            assert op.item_id in ids, f"delete of absent {op.item_id}"
        else:
            assert op.item.id not in ids, f"create of present {op.item.id}"
            assert op.previous_item_id is None or op.previous_item_id in ids, (
                f"{op.item.id} follows {op.previous_item_id}, which is not there"
            )
        state = apply(state, [op])
    return state


def check_diff(remote: list[Item], local: list[Item]) -> None:
    ops = diff(remote, local)
    assert replay(remote, ops) == local
    assert apply(remote, ops) == local
    common = lcs_length(remote, local)
    deletes = [op for op in ops if isinstance(op, Delete)]
    creates = [op for op in ops if isinstance(op, Create)]
    # Minimal: only what is not in a longest common subsequence is deleted / created.
    assert len(deletes) == len(remote) - common
    assert len(creates) == len(local) - common
    # Creates come in local order, so they can be sent one after another as they are.
    order = [it.id for it in local]
    assert [order.index(op.item.id) for op in creates] == sorted(
        order.index(op.item.id) for op in creates
    )


@PROPERTY
@given(independent_lists())
def test_diff_turns_remote_into_local_independent(pair: tuple[list[Item], list[Item]]) -> None:
    check_diff(*pair)


@PROPERTY
@given(edited_lists())
def test_diff_turns_remote_into_local_edited(pair: tuple[list[Item], list[Item]]) -> None:
    check_diff(*pair)


def test_diff_of_an_append_is_one_create_after_the_last_item() -> None:
    remote = items_from([("item_0", 0), ("item_1", 0)])
    new = make_item("item_2", 0)
    assert diff(remote, [*remote, new]) == [Create(new, "item_1")]
    assert diff(remote, remote) == []
    assert diff([], [new]) == [Create(new, None)]


def test_changed_item_is_deleted_and_recreated_in_place() -> None:
    remote = items_from([("item_0", 0), ("item_1", 0), ("item_2", 0)])
    local = [remote[0], make_item("item_1", 1), remote[2]]
    assert diff(remote, local) == [Delete("item_1"), Create(local[1], "item_0")]


def test_moved_item_keeps_the_rest() -> None:
    a, b, c, d = items_from([("item_0", 0), ("item_1", 0), ("item_2", 0), ("item_3", 0)])
    ops = diff([a, b, c, d], [b, c, d, a])
    assert ops == [Delete(a.id), Create(a, d.id)]


def test_diff_refuses_duplicate_local_ids() -> None:
    a = make_item("item_0", 0)
    with pytest.raises(ValueError, match="duplicate"):
        diff([], [a, make_item("item_0", 1)])


def test_apply_refuses_what_a_server_would() -> None:
    a, b = items_from([("item_0", 0), ("item_1", 0)])
    with pytest.raises(ValueError, match="already exists"):
        apply([a], [Create(a, None)])
    with pytest.raises(ValueError, match="not found"):
        apply([a], [Create(b, "item_9")])


def test_audio_bytes_do_not_count_as_a_change() -> None:
    """Only what the model sees (transcript, duration) decides whether to resend."""
    part = AudioPart(transcript="hi", duration_ms=500.0, pcm16=b"\x00\x00")
    msg = Message(role="assistant", content=(part,), id="item_a")
    same = replace(msg, content=(replace(part, pcm16=b"\x01\x01"),))
    assert diff([msg], [same]) == []


# --- Conversation ---------------------------------------------------------------------------


def ids(conv: Conversation) -> list[str]:
    return [it.id for it in conv]


def test_append_insert_and_duplicate_ids() -> None:
    conv = Conversation()
    a = conv.add_message("user", "hello")
    b = conv.append(Message.text_message("assistant", "hi", id="b"))
    conv.insert_after(None, Message.text_message("system", "be brief", id="sys"))
    conv.insert_after(a.id, Message.text_message("user", "again", id="a2"))
    conv.insert_after("missing", Message.text_message("user", "end", id="z"))
    assert ids(conv) == ["sys", a.id, "a2", "b", "z"]
    assert b.id in conv and "nope" not in conv and len(conv) == 5
    with pytest.raises(ValueError, match="duplicate"):
        conv.append(Message.text_message("user", "x", id="b"))
    with pytest.raises(ValueError, match="duplicate"):
        conv.insert_after(None, Message.text_message("user", "x", id="z"))
    with pytest.raises(ValueError, match="duplicate"):
        Conversation([b, b])


def test_replace_upsert_remove_and_lookup() -> None:
    conv = Conversation(items_from([("item_0", 0), ("item_1", 0), ("item_2", 0)]))
    new = make_item("item_1", 1)
    conv.replace(new)
    assert conv.get("item_1") is new and conv.index("item_1") == 1
    with pytest.raises(KeyError):
        conv.replace(make_item("item_5", 0))
    with pytest.raises(KeyError):
        conv.index("item_5")
    conv.upsert(make_item("item_1", 0))
    assert conv.index("item_1") == 1 and conv.get("item_1") == make_item("item_1", 0)
    conv.upsert(make_item("item_4", 0), previous_item_id="item_0")
    conv.upsert(make_item("item_7", 0))
    assert ids(conv) == ["item_0", "item_4", "item_1", "item_2", "item_7"]
    assert conv.remove("item_4") == make_item("item_4", 0)
    assert conv.remove("item_4") is None
    assert conv.get("item_4") is None


def test_snapshots_do_not_change_under_edits() -> None:
    conv = Conversation(items_from([("item_0", 0), ("item_1", 0)]))
    snapshot, copy = conv.items, conv.copy()
    for item in conv:  # iteration is over a snapshot, so editing inside is safe
        conv.remove(item.id)
    assert len(conv) == 0 and len(snapshot) == 2 and ids(copy) == ["item_0", "item_1"]


def test_truncate_message_keeps_what_was_heard() -> None:
    audio = AudioPart(transcript="Sure, the table is booked for eight.", duration_ms=3000.0)
    msg = Message(role="assistant", content=(audio,), id="reply", complete=False)
    conv = Conversation([msg])
    conv.truncate_message("reply", 1200.0, "Sure, the table")
    cut = conv.get("reply")
    assert isinstance(cut, Message)
    assert cut.truncated_ms == 1200.0 and cut.complete
    assert cut.text == "Sure, the table" and cut.audio_ms == 1200.0
    assert conv.index("reply") == 0

    # Without a heard transcript the text stays; played time past the end is capped.
    conv.replace(msg)
    conv.truncate_message("reply", 9000.0, None)
    kept = conv.get("reply")
    assert isinstance(kept, Message)
    assert kept.text == audio.transcript and kept.audio_ms == 3000.0


def test_truncate_message_text_parts_and_non_messages() -> None:
    conv = Conversation([Message.text_message("assistant", "one two three", id="t")])
    conv.truncate_message("t", 500.0, "one")
    t = conv.get("t")
    assert isinstance(t, Message) and t.text == "one" and t.truncated_ms == 500.0
    call = make_item("item_1", 0)
    conv.append(call)
    conv.truncate_message(call.id, 100.0, "x")  # not a message: left alone
    conv.truncate_message("missing", 100.0, "x")
    assert conv.get(call.id) is call
