"""After a barge-in: cancel the reply, then make the conversation hold only what was heard.

Kept apart from the session because its order matters and is easy to get wrong:
cancel first (only if the reply is still live), wait for the reply to end, then
truncate what was partly heard and delete what was not heard at all (a
truncate to 0 ms is rejected by realtime servers).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from .backend import BackendSession
from .conversation import Conversation, Message
from .errors import BackendErrorException
from .responses import ResponseState

#: How long to wait for a cancelled reply to end before cutting its items anyway.
CANCEL_SETTLE_S = 5.0


@dataclass(frozen=True)
class Cut:
    """Per assistant item: milliseconds to keep, or deletion."""

    truncate: dict[str, int] = field(default_factory=dict)
    delete: tuple[str, ...] = ()


def plan_cut(conversation: Conversation, item_ids: list[str], heard: dict[str, float]) -> Cut:
    """Which items to truncate and which to delete, from the milliseconds heard of each."""
    truncate: dict[str, int] = {}
    delete: list[str] = []
    for item_id in dict.fromkeys([*item_ids, *heard]):
        item = conversation.get(item_id)
        if not isinstance(item, Message) or item.role != "assistant":
            continue
        played = int(heard.get(item_id, 0.0))
        if played > 0:
            truncate[item_id] = played
        else:
            delete.append(item_id)
    return Cut(truncate, tuple(delete))


async def settle_interrupted(
    backend: BackendSession,
    control: asyncio.Lock,
    conversation: Conversation,
    resp: ResponseState,
    heard: dict[str, float],
    *,
    cancel: bool,
    truncation: bool,
    on_error: Callable[[BackendErrorException], None],
) -> Cut:
    """What was cut; items in ``Cut.delete`` were removed locally (the caller syncs that)."""
    async with control:
        if cancel and not resp.done.is_set():
            await backend.cancel_response()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(resp.done.wait(), CANCEL_SETTLE_S)
    cut = plan_cut(conversation, resp.items, heard)
    if truncation:
        for item_id, ms in cut.truncate.items():
            async with control:
                try:
                    await backend.truncate(item_id, ms)
                except BackendErrorException as e:
                    on_error(e)
    for item_id in cut.delete:
        conversation.remove(item_id)
    return cut
