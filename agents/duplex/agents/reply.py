"""`Reply`: one reply of the agent, from its request to its settlement.

A reply owns its request, its items, how many milliseconds of each the caller
heard, the moments that make its metrics, its tool batch and its fate. Its state
changes only through the verbs below; the session routes backend events to the
reply they belong to and never touches a reply's fields itself.

Lifecycle::

    requested -> started -> playing -> interrupted -> settled -> done
                                    \\-> paused -> resumed -> playing
                                    \\-> done (played to the end)

`settle` is the one place a reply's items are cut: cancel it if the backend still
runs it, wait for its end, then truncate each of *its own* items to what was heard
(delete those not heard at all: realtime servers refuse a truncate to 0 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from .backend import BackendSession, ResponseDone
from .conversation import Conversation, Message
from .errors import BackendErrorException
from .events import TurnMetrics

if TYPE_CHECKING:
    from .playout import Playout
    from .tool_runner import ToolBatch

#: What `generate_reply` does while another reply is active.
ReplyPolicy = Literal["queue", "cancel_existing", "reject"]
Fate = Literal["requested", "started", "playing", "paused", "interrupted", "done", "failed"]

#: How long to wait for a cancelled reply to end before cutting its items anyway.
CANCEL_SETTLE_S = 5.0
#: Heard this close to an item's full length counts as heard in full (frame padding).
_FULL_TOLERANCE_MS = 1.0


@dataclass(frozen=True)
class Cut:
    """Per assistant item of one reply: milliseconds to keep, or deletion."""

    truncate: dict[str, int] = field(default_factory=dict)
    delete: tuple[str, ...] = ()


@dataclass(frozen=True)
class SettleContext:
    """What `Reply.settle` needs from the session."""

    backend: BackendSession
    control: asyncio.Lock
    conversation: Conversation
    truncation: bool
    on_error: Callable[[BackendErrorException], None]


def _ms(later: float | None, earlier: float | None) -> float | None:
    if later is None or earlier is None:
        return None
    return (later - earlier) * 1000.0


@dataclass(eq=False)
class Reply:
    request_id: str | None = None
    requested_at: float | None = None
    response_id: str | None = None
    #: When the caller's speech this reply answers ended (capture time, monotonic).
    speech_end_at: float | None = None
    started_at: float | None = None
    first_delta_at: float | None = None
    first_played_at: float | None = None
    #: The caller's speech onset that interrupted it (capture time) and when output stopped.
    onset_at: float | None = None
    stopped_at: float | None = None
    items: list[str] = field(default_factory=list)
    received_ms: dict[str, float] = field(default_factory=dict)
    heard: dict[str, float] = field(default_factory=dict)
    tool_batch: ToolBatch | None = None
    result: ResponseDone | None = None
    fate: Fate = "requested"
    interrupted: bool = False
    #: Interrupted before it started: cancel it as soon as it does.
    cancel_on_start: bool = False
    resumes: int = 0
    settled: bool = False
    metrics_sent: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)

    # --- backend events -------------------------------------------------------------------
    def start(self, response_id: str, *, speech_end_at: float | None) -> None:
        self.response_id = response_id
        self.started_at = time.monotonic()
        if self.speech_end_at is None:
            self.speech_end_at = speech_end_at
        if self.fate == "requested":
            self.fate = "started"

    def add_item(self, item_id: str) -> bool:
        """Claim an item of this reply; False when it was already its own."""
        if item_id in self.items:
            return False
        self.items.append(item_id)
        return True

    def audio(self, item_id: str, ms: float) -> None:
        self.add_item(item_id)
        if self.first_delta_at is None:
            self.first_delta_at = time.monotonic()
        self.received_ms[item_id] = self.received_ms.get(item_id, 0.0) + ms

    def first_frame(self, at: float) -> None:
        """Its first frame was written to the transport."""
        if self.first_played_at is None:
            self.first_played_at = at
        if self.fate == "started":
            self.fate = "playing"

    def finish(self, event: ResponseDone) -> None:
        self.result = event
        if self.fate in ("requested", "started", "playing") and event.status == "failed":
            self.fate = "failed"
        self.done.set()

    def request_failed(self) -> None:
        self.fate = "failed"
        self.done.set()

    def attach_tools(self, batch: ToolBatch) -> None:
        self.tool_batch = batch
        if self.interrupted:
            batch.interrupted = True

    # --- interruption ---------------------------------------------------------------------
    @property
    def live(self) -> bool:
        """Started (or requested) and not finished by the backend."""
        return not self.done.is_set()

    @property
    def cut(self) -> bool:
        return self.interrupted

    def pause(self, *, onset_at: float | None, stopped_at: float) -> None:
        """The caller spoke over it: playback is held until it is resumed or cut."""
        self.onset_at = onset_at if onset_at is not None else stopped_at
        self.stopped_at = stopped_at
        self.fate = "paused"

    def resume(self) -> None:
        """A false interruption: it plays on, nothing is cut."""
        self.resumes += 1
        self.onset_at = self.stopped_at = None
        self.fate = "done" if self.done.is_set() else "playing"

    def interrupt(self, *, onset_at: float | None, stopped_at: float) -> float:
        """Cut by the caller; returns the interruption latency (onset -> output stopped)."""
        if self.fate != "paused" or self.onset_at is None:
            self.onset_at = onset_at if onset_at is not None else stopped_at
            self.stopped_at = stopped_at
        self.interrupted = True
        self.fate = "interrupted"
        if self.tool_batch is not None:
            self.tool_batch.interrupted = True
        return self.interruption_ms or 0.0

    def cancel_when_started(self) -> None:
        self.cancel_on_start = True
        self.interrupted = True
        self.fate = "interrupted"

    @property
    def interruption_ms(self) -> float | None:
        if not self.interrupted:
            return None
        return _ms(self.stopped_at, self.onset_at)

    def note_heard(self, playout: Playout) -> None:
        """Read how much of each of its items the caller heard."""
        for item_id in self.items:
            self.heard[item_id] = playout.heard_ms(item_id)

    @property
    def played_ms(self) -> float:
        return sum(self.heard.values())

    def cut_item(self) -> tuple[str | None, float]:
        """The item that was playing when it was cut, and the ms of it heard."""
        heard = [i for i in self.items if self.heard.get(i, 0.0) > 0]
        if heard:
            return heard[-1], self.heard[heard[-1]]
        return (self.items[0] if self.items else None), 0.0

    def plan_cut(self, conversation: Conversation) -> Cut:
        """Its own assistant items: truncate the partly heard, delete the unheard."""
        truncate: dict[str, int] = {}
        delete: list[str] = []
        for item_id in self.items:
            item = conversation.get(item_id)
            if not isinstance(item, Message) or item.role != "assistant":
                continue
            heard = self.heard.get(item_id, 0.0)
            full = max(item.audio_ms, self.received_ms.get(item_id, 0.0))
            if heard <= 0:
                delete.append(item_id)
            elif heard < full - _FULL_TOLERANCE_MS:
                truncate[item_id] = max(1, int(heard))
        return Cut(truncate, tuple(delete))

    async def settle(self, ctx: SettleContext, *, cancel: bool) -> Cut:
        """Cancel it if still live, wait for its end, then cut its items to what was heard.

        Items in ``Cut.delete`` are removed locally; the caller syncs that to the backend.
        """
        if cancel and self.live:
            async with ctx.control:
                if self.live:
                    await ctx.backend.cancel_response()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.done.wait(), CANCEL_SETTLE_S)
        cut = self.plan_cut(ctx.conversation)
        if ctx.truncation:
            for item_id, ms in cut.truncate.items():
                async with ctx.control:
                    try:
                        await ctx.backend.truncate(item_id, ms)
                    except BackendErrorException as e:
                        ctx.on_error(e)
        for item_id in cut.delete:
            ctx.conversation.remove(item_id)
        self.settled = True
        return cut

    # --- metrics --------------------------------------------------------------------------
    @property
    def accounted(self) -> bool:
        return self.metrics_sent

    def metrics(self) -> TurnMetrics:
        """Its turn metrics; marks them sent (each reply reports once)."""
        self.metrics_sent = True
        usage = self.result.usage if self.result is not None else None
        return TurnMetrics(
            response_id=self.response_id or "",
            end_to_end_ms=_ms(self.first_played_at, self.speech_end_at),
            backend_ttfa_ms=_ms(self.first_delta_at, self.requested_at or self.started_at),
            interruption_ms=self.interruption_ms,
            played_ms=self.played_ms,
            interrupted=self.interrupted,
            status=self.result.status if self.result is not None else "unknown",
            input_tokens=usage.input_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
        )
