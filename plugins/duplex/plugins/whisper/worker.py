"""The process's Whisper worker: two lanes so a turn's final pass never queues behind others.

Background passes (pieces of speech that settled while the caller talks, and
occasional interim previews) go through one bounded FIFO lane shared by every
call; final passes (what a caller waits for at the end of a turn) have a lane of
their own. The model is loaded with two CTranslate2 workers, so a final runs
even while a background pass is in progress.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class LaneFullError(RuntimeError):
    """The background lane already holds its maximum of queued passes."""


class Lanes:
    def __init__(self, max_background: int = 32) -> None:
        self.max_background = max_background
        self._background = ThreadPoolExecutor(1, thread_name_prefix="whisper-bg")
        self._final = ThreadPoolExecutor(1, thread_name_prefix="whisper-final")
        self._lock = threading.Lock()
        self._queued = 0  # background passes submitted and not finished

    @property
    def background_pending(self) -> int:
        return self._queued

    def background(self, fn: Callable[[], T]) -> Future[T]:
        """Queue a background pass; raises `LaneFullError` when the lane is full."""
        with self._lock:
            if self._queued >= self.max_background:
                raise LaneFullError(f"{self._queued} background passes already queued")
            self._queued += 1
        fut = self._background.submit(fn)
        fut.add_done_callback(self._release)  # also when withdrawn before it ran
        return fut

    def _release(self, _fut: Future[T]) -> None:
        with self._lock:
            self._queued -= 1

    def final(self, fn: Callable[[], T]) -> Future[T]:
        return self._final.submit(fn)


_lanes: Lanes | None = None
_lanes_lock = threading.Lock()


def shared_lanes() -> Lanes:
    global _lanes
    with _lanes_lock:
        if _lanes is None:
            _lanes = Lanes()
        return _lanes
