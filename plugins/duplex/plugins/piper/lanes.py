"""Where Piper runs: two bounded lanes per process so a reply's first words never queue.

Every call's speech goes through the same few threads (the machine has only so
many cores). Short texts - the first clause of a reply ("Sure," / "You said:"),
which the caller is waiting for in silence - have an express lane of their own
(two workers, one per core here);
longer ones share a bulk lane of two workers at a lower OS priority, where waiting
costs nothing as long as the reply's earlier audio is still playing. Bounded thread counts keep many
callers' syntheses from oversubscribing the cores that Whisper and the turn model
also need.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

#: Texts up to this many characters go through the express lane.
EXPRESS_CHARS = 40
#: Niceness added to the bulk lane's threads (Linux): when the cores are short, the first
#: clauses, the turn model and Whisper's finals run before the rest of a reply.
BULK_NICE = 5


def _lower_priority(nice: int) -> None:
    # On Linux a thread id names one thread; elsewhere it would renice the whole process.
    if sys.platform == "linux" and nice > 0:
        with contextlib.suppress(OSError):
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)


class SynthesisLanes:
    def __init__(
        self,
        bulk_workers: int = 2,
        express_workers: int = 2,
        express_chars: int = EXPRESS_CHARS,
        bulk_nice: int = BULK_NICE,
    ) -> None:
        self.express_chars = express_chars
        self._express = ThreadPoolExecutor(express_workers, thread_name_prefix="piper-express")
        self._bulk = ThreadPoolExecutor(
            bulk_workers,
            thread_name_prefix="piper-bulk",
            initializer=_lower_priority,
            initargs=(bulk_nice,),
        )

    def submit(self, text: str, fn: Callable[[], None]) -> Future[None]:
        lane = self._express if len(text) <= self.express_chars else self._bulk
        return lane.submit(fn)


_lanes: SynthesisLanes | None = None
_lock = threading.Lock()


def shared_lanes() -> SynthesisLanes:
    """The process-wide lanes every `PiperTTS` uses."""
    global _lanes
    with _lock:
        if _lanes is None:
            _lanes = SynthesisLanes()
        return _lanes
