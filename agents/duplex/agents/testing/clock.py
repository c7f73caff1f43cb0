"""`ManualScheduler`: timers that fire when a test says time has passed, not when it has."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(order=True)
class _Timer:
    due: float
    seq: int
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class ManualScheduler:
    """`call_later` on a virtual clock; `advance(seconds)` runs what became due, in order."""

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[_Timer] = []
        self._seq = 0

    def call_later(self, delay: float, callback: Callable[[], None]) -> _Timer:
        self._seq += 1
        timer = _Timer(self.now + max(0.0, delay), self._seq, callback)
        self._timers.append(timer)
        return timer

    @property
    def pending(self) -> int:
        return sum(1 for t in self._timers if not t.cancelled)

    def advance(self, seconds: float) -> int:
        """Move the clock; returns how many timers fired."""
        target = self.now + seconds
        fired = 0
        while True:
            due = sorted(t for t in self._timers if not t.cancelled and t.due <= target)
            if not due:
                break
            timer = due[0]
            self._timers.remove(timer)
            self.now = timer.due
            timer.callback()
            fired += 1
        self._timers = [t for t in self._timers if not t.cancelled]
        self.now = target
        return fired
