"""Per-response metrics: latency to first audio/text, duration, tokens, outcome.

A `ResponseMetrics` is attached to the `OpenAIResponseHandle` of a requested
response (``handle.metrics``) and appended to ``session.response_metrics`` for
every response, server-initiated ones included.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from duplex.agents.backend import Usage


@dataclass
class ResponseMetrics:
    response_id: str
    #: The `create_response` request it answers; None for a server-VAD reply.
    request_id: str | None = None
    created_at: float = field(default_factory=time.monotonic)
    #: Seconds from response.created to the first audio delta / first text or transcript delta.
    time_to_first_audio: float | None = None
    time_to_first_text: float | None = None
    #: Seconds from response.created to response.done.
    duration: float | None = None
    status: str = "in_progress"
    reason: str | None = None
    error: str | None = None
    audio_ms: float = 0.0
    usage: Usage | None = None

    @property
    def cancelled(self) -> bool:
        return self.status == "cancelled"

    @property
    def tokens_per_second(self) -> float | None:
        if self.usage is None or not self.duration:
            return None
        return self.usage.output_tokens / self.duration

    def mark_audio(self) -> None:
        if self.time_to_first_audio is None:
            self.time_to_first_audio = time.monotonic() - self.created_at

    def mark_text(self) -> None:
        if self.time_to_first_text is None:
            self.time_to_first_text = time.monotonic() - self.created_at

    def finish(
        self, status: str, usage: Usage | None, reason: str | None, error: str | None
    ) -> None:
        self.duration = time.monotonic() - self.created_at
        self.status, self.usage, self.reason, self.error = status, usage, reason, error


def _int(d: Any, key: str) -> int:
    v = d.get(key) if isinstance(d, dict) else None
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0


def usage_from_wire(usage: Any) -> Usage | None:
    """`Usage` from a response's ``usage`` object (GA and beta share the shape)."""
    if not isinstance(usage, dict):
        return None
    inp = usage.get("input_token_details") or {}
    out = usage.get("output_token_details") or {}
    return Usage(
        input_tokens=_int(usage, "input_tokens"),
        output_tokens=_int(usage, "output_tokens"),
        input_text_tokens=_int(inp, "text_tokens"),
        input_audio_tokens=_int(inp, "audio_tokens"),
        input_cached_tokens=_int(inp, "cached_tokens"),
        output_text_tokens=_int(out, "text_tokens"),
        output_audio_tokens=_int(out, "audio_tokens"),
    )
