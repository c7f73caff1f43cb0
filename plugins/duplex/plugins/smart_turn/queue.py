"""One inference worker for the whole process, shared by every call.

End-of-turn questions are short (~10-40 ms each) and come at pauses, so one
thread serves them in arrival order; more would only take cores from the speech
models. The queue is bounded: past ``max_pending`` a request fails at once with
`EndOfTurnBusyError`, and the turn detector falls back to its silence rule.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from duplex.agents.errors import DuplexError


class EndOfTurnBusyError(DuplexError):
    """The shared end-of-turn worker already holds ``max_pending`` requests."""


class InferenceQueue:
    """FIFO of blocking model calls run on ``workers`` threads (one by default); counts them.

    More workers only pay on machines with cores to spare: on 2 cores, 2 workers
    at a burst of 4 callers measured no better than 1 (within the noise).
    """

    def __init__(self, max_pending: int = 64, name: str = "smart-turn", workers: int = 1) -> None:
        self.max_pending = max_pending
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._pending = 0
        #: Requests run to completion since the queue was made (for tests and metrics).
        self.served = 0
        #: Requests refused because the queue was full.
        self.refused = 0

    @property
    def pending(self) -> int:
        return self._pending

    def submit(self, fn: Callable[[], float]) -> Future[float]:
        with self._lock:
            if self._pending >= self.max_pending:
                self.refused += 1
                failed: Future[float] = Future()
                failed.set_exception(
                    EndOfTurnBusyError(f"{self._pending} end-of-turn requests already queued")
                )
                return failed
            self._pending += 1
        try:
            fut = self._executor.submit(self._run, fn)
        except RuntimeError:  # the interpreter is shutting down
            self._release(None)
            raise
        # Also on cancel: a request withdrawn before it ran frees its place.
        fut.add_done_callback(self._release)
        return fut

    def _release(self, _fut: Future[float] | None) -> None:
        with self._lock:
            self._pending -= 1

    def _run(self, fn: Callable[[], float]) -> float:
        try:
            return fn()
        finally:
            with self._lock:
                self.served += 1


_lanes: dict[str, InferenceQueue] = {}
_lanes_lock = threading.Lock()


def shared_lane(name: str) -> InferenceQueue:
    """The process-wide queue called ``name`` (one worker, bounded), made on first use."""
    with _lanes_lock:
        lane = _lanes.get(name)
        if lane is None:
            lane = _lanes[name] = InferenceQueue(name=name)
        return lane


def shared_queue() -> InferenceQueue:
    """The process-wide queue every `SmartTurn` uses unless given its own."""
    return shared_lane("smart-turn")
