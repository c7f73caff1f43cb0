"""Retry timing shared by every client that redials a remote service.

One place decides how long to wait before the next attempt (doubling, capped, with
jitter so many agents that lost the same server do not redial in lockstep) and which
failures are worth a retry at all: an auth failure or a bad request is answered the
same way every time, so it is never retried.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["RETRYABLE_STATUS", "Backoff", "retryable_status"]

#: HTTP statuses at a handshake that can succeed on a later attempt.
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def retryable_status(status: int) -> bool:
    """Whether a refused handshake (HTTP ``status``) may succeed if tried again."""
    return status in RETRYABLE_STATUS


@dataclass(frozen=True)
class Backoff:
    """Doubling delays from ``initial`` up to ``cap``; ``jitter`` is the random share of each."""

    initial: float = 0.1
    cap: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.initial < 0 or self.cap < 0 or not 0.0 <= self.jitter <= 1.0:
            raise ValueError("backoff delays must be >= 0 and jitter within [0, 1]")

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """An endless series of delays; the caller bounds it by attempts or by a deadline."""
        rng = rng or random.Random()
        delay = self.initial
        while True:
            spread = delay * self.jitter
            yield max(0.0, min(self.cap, delay - spread + rng.random() * 2 * spread))
            delay = min(self.cap, delay * 2 if delay else self.initial)
