"""The whole-call invariants, as a list of problems (empty: the call is consistent).

1. The server's conversation equals the client's: same ids in the same order, same
   kinds, same content (text of user and tool items, transcript of fully heard replies).
2. Every assistant item keeps exactly the audio the caller's output received (measured
   from the played frames), and the heard audio is the item's first samples in order.
   An item the caller never heard is gone; no heard reply is lost.
3. Only an item that was playing at a barge-in is truncated, to what was heard.
4. No duplicate item; each tool output was created on the server exactly once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import signal
from .rig import SItem, local_items

if TYPE_CHECKING:
    from .call import Call

#: Truncation is sent in whole milliseconds.
TOLERANCE_MS = 1.0


def _fmt(items: list[SItem]) -> str:
    return ", ".join(f"{i.kind}:{(i.id or '?')[-6:]}" for i in items)


def _empty(item: SItem) -> bool:
    return item.kind in ("user", "system") and not item.text.strip() and not item.audio_ms


def check_call(call: Call) -> list[str]:
    rig = call.rig
    problems: list[str] = []
    local = local_items(call.session.conversation.items)
    view = rig.conversation()
    server = view if view is not None else []
    problems += rig.check_server()

    # 4. duplicates
    for side, items in (("local", local), ("server", server)):
        ids = [i.id for i in items if i.id is not None]
        dupes = {i for i in ids if ids.count(i) > 1}
        if dupes:
            problems.append(f"{side} conversation holds duplicate items {sorted(dupes)}")

    # 1. same conversation. A message with nothing a server accepts (no words, e.g. the
    # committed noise of a false interruption) is local-only by design: a replay after a
    # reconnect cannot re-create it, so it may be missing on the server.
    server_ids = {i.id for i in server}
    shown = [i for i in local if i.id in server_ids or not _empty(i)]
    if view is not None and [(i.id, i.kind) for i in shown] != [(i.id, i.kind) for i in server]:
        problems.append(
            f"conversations differ:\n    local  [{_fmt(shown)}]\n    server [{_fmt(server)}]"
        )
    by_id = {i.id: i for i in server}
    tags = rig.item_tags()
    heard, foreign = signal.heard(call.out.played)
    if foreign:
        problems.append(f"{foreign} played samples belong to no reply")
    for it in local:
        srv = by_id.get(it.id)
        if srv is None:
            continue
        if it.kind in ("user", "output", "call") and srv.text != it.text:
            problems.append(f"{it.kind} {it.id}: server text {srv.text!r} != local {it.text!r}")
        if it.kind == "output" and srv.call_id != it.call_id:
            problems.append(f"output {it.id}: call ids differ")

    # 2. kept == heard
    item_of_tag: dict[int, str] = {}
    for item_id, tag in tags.items():
        if tag in item_of_tag:
            problems.append(f"reply {tag} has two items on the server")
        item_of_tag[tag] = item_id
    local_by_id = {i.id: i for i in local}
    for it in local:
        if it.kind != "assistant":
            continue
        found = tags.get(it.id or "")
        if found is None:
            problems.append(f"assistant item {it.id} has no reply audio the server generated")
            continue
        tag = found
        if it.truncated and tag not in call.cut:
            problems.append(
                f"item {it.id} (reply {tag}) is marked truncated locally though it was not "
                "playing at a barge-in"
            )
        spec = call.specs.get(tag)
        h = heard.get(tag)
        heard_ms = h.ms() if h else 0.0
        if h is not None and not h.in_order:
            problems.append(f"reply {tag}: the caller heard its audio out of order")
        if heard_ms == 0:
            problems.append(f"item {it.id} (reply {tag}) is kept but the caller heard none of it")
        if it.audio_ms is not None and abs(it.audio_ms - heard_ms) > TOLERANCE_MS:
            problems.append(
                f"item {it.id} (reply {tag}): local keeps {it.audio_ms:.0f} ms, "
                f"caller heard {heard_ms:.0f} ms"
            )
        srv = by_id.get(it.id)
        kept = srv.audio_ms if srv is not None and rig.server_holds_audio else None
        if kept is not None and abs(kept - heard_ms) > TOLERANCE_MS:
            problems.append(
                f"item {it.id} (reply {tag}): server keeps {kept:.0f} ms, "
                f"caller heard {heard_ms:.0f} ms"
            )
        if spec is not None and h is not None:
            full = heard_ms >= spec.audio_ms - TOLERANCE_MS
            if full and it.text != spec.text:
                problems.append(
                    f"item {it.id} (reply {tag}) was heard in full but local text is "
                    f"{it.text!r}, not {spec.text!r}"
                )
            if full and srv is not None and srv.text != spec.text:
                problems.append(
                    f"item {it.id} (reply {tag}) was heard in full but the server holds "
                    f"{srv.text!r}, not {spec.text!r}"
                )
            if not full and not spec.text.startswith(it.text.rstrip(".")):
                problems.append(f"item {it.id}: kept text {it.text!r} is not what was said")
    for tag, h in heard.items():
        owner = item_of_tag.get(tag)
        if h.samples and (owner is None or owner not in local_by_id):
            problems.append(
                f"lost: the caller heard {h.ms():.0f} ms of reply {tag}; no item holds it"
            )

    # 3. truncations
    for item_id, ms in rig.truncations():
        cut_tag = tags.get(item_id)
        h = heard.get(cut_tag) if cut_tag is not None else None
        heard_ms = h.ms() if h else 0.0
        if cut_tag not in call.cut:
            problems.append(
                f"truncated item {item_id} (reply {cut_tag}) to {ms} ms though it was not playing "
                f"at a barge-in (the caller heard {heard_ms:.0f} ms)"
            )
        elif abs(ms - heard_ms) > TOLERANCE_MS:
            problems.append(f"truncated {item_id} to {ms} ms, the caller heard {heard_ms:.0f}")

    # 4. tool outputs exactly once
    created = rig.output_creations()
    for it in server:
        if it.kind == "output" and created.get(it.call_id, 0) != 1:
            problems.append(
                f"output of {it.call_id} was created {created.get(it.call_id, 0)} times"
            )
    for call_id, n in created.items():
        if n != 1:
            problems.append(f"output of {call_id} was created {n} times")
    calls = {i.call_id for i in local if i.kind == "call"}
    outputs = [i.call_id for i in local if i.kind == "output"]
    for call_id in calls:
        if outputs.count(call_id) != 1:
            problems.append(f"call {call_id} has {outputs.count(call_id)} outputs locally")
    return problems
