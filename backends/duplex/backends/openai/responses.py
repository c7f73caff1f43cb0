"""Response lifecycle: requests waiting to be sent, sent and unmatched, and active responses.

The server allows one active response per conversation, so requests are queued
and sent one at a time. A ``response.created`` is matched to its request by the
``client_event_id`` the server echoes in ``metadata``; a server that does not echo
metadata gets FIFO matching. Once any echo has been seen, a ``response.created``
without one is known to be server-initiated (server VAD).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from duplex.agents.backend import ResponseHandle

from .metrics import ResponseMetrics


@dataclass(eq=False)
class OpenAIResponseHandle(ResponseHandle):
    """A `ResponseHandle` that also carries the response's `ResponseMetrics` once done."""

    instructions: str | None = None
    tool_choice: str | None = None
    metrics: ResponseMetrics | None = None
    #: Cancel as soon as the server creates it (it was cancelled before being created).
    cancel_on_create: bool = False
    retries: int = 0
    #: When its response.create left (the watchdog's clock for "no reply created").
    sent_at: float | None = None


@dataclass
class ItemStream:
    """An output item of a response while it streams."""

    item_id: str
    response_id: str
    kind: str  # "message" | "function_call" | "other"
    parts: list[str] = field(default_factory=list)  # content kinds in order: "audio" | "text"
    transcript: str = ""
    text: str = ""
    audio_samples: int = 0
    sample_rate: int = 24000
    arguments: str = ""
    call_id: str = ""
    name: str = ""
    done: bool = False
    #: FunctionCallRequested already emitted (arguments.done and output_item.done both end it).
    requested: bool = False

    @property
    def audio_ms(self) -> float:
        return 1000.0 * self.audio_samples / self.sample_rate


@dataclass
class ActiveResponse:
    id: str
    handle: OpenAIResponseHandle | None
    metrics: ResponseMetrics
    #: response.cancel was sent for it.
    cancel_sent: bool = False
    #: Server VAD heard the caller and will cancel it itself (interrupt_response).
    server_cancelling: bool = False
    items: list[str] = field(default_factory=list)
    #: For the reply watchdog: when it was created, when anything last arrived for it,
    #: and whether a first delta (audio, text, transcript, arguments) arrived at all.
    created_at: float = field(default_factory=time.monotonic)
    last_event_at: float = field(default_factory=time.monotonic)
    output_seen: bool = False

    @property
    def stopping(self) -> bool:
        return self.cancel_sent or self.server_cancelling

    def touch(self, *, delta: bool = True) -> None:
        self.last_event_at = time.monotonic()
        if delta:
            self.output_seen = True


class Responses:
    def __init__(self) -> None:
        self.queued: deque[OpenAIResponseHandle] = deque()
        self.sent: deque[OpenAIResponseHandle] = deque()
        self.active: dict[str, ActiveResponse] = {}
        self.streams: dict[str, ItemStream] = {}
        self.echo_seen = False
        #: Response ids that ended (done, or cancelled by the server); never cancelled again.
        self.ended: deque[str] = deque(maxlen=64)
        #: request id -> response id, for requests already matched (bounded).
        self.matched: dict[str, str] = {}

    @property
    def busy(self) -> bool:
        return bool(self.active or self.sent)

    def by_request(self, request_id: str) -> OpenAIResponseHandle | None:
        for h in (*self.sent, *self.queued):
            if h.request_id == request_id:
                return h
        return None

    def match_created(self, response: dict[str, Any]) -> OpenAIResponseHandle | None:
        """The request a new response answers, or None for a server-initiated response."""
        meta = response.get("metadata")
        rid = meta.get("client_event_id") if isinstance(meta, dict) else None
        if isinstance(rid, str):
            self.echo_seen = True
            for h in self.sent:
                if h.request_id == rid:
                    self.sent.remove(h)
                    return self._matched(h, response)
            return None  # a request we already gave up on
        if self.echo_seen or not self.sent:
            return None
        return self._matched(self.sent.popleft(), response)

    def _matched(self, h: OpenAIResponseHandle, response: dict[str, Any]) -> OpenAIResponseHandle:
        self.matched[h.request_id] = str(response.get("id"))
        while len(self.matched) > 64:
            del self.matched[next(iter(self.matched))]
        return h

    def forget_sent(self, handle: OpenAIResponseHandle) -> None:
        if handle in self.sent:
            self.sent.remove(handle)
