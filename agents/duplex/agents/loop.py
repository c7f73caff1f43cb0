"""The event loop: uvloop when it is installed, and a cheap "is the loop behind?" signal.

uvloop (the ``uvloop`` extra) runs the same asyncio code with a faster loop and
socket layer; `run` uses it unless ``DUPLEX_UVLOOP=0``. `LoopLag` lets hot paths
(the audio uplink's append coalescing) trade a little latency for less work only
while the loop is actually late, measured by one shared timer per loop.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

#: Environment switch: ``0`` keeps the standard asyncio loop even when uvloop is installed.
UVLOOP_ENV = "DUPLEX_UVLOOP"


def uvloop_wanted() -> bool:
    return os.environ.get(UVLOOP_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def run(main: Coroutine[Any, Any, T], *, debug: bool | None = None) -> T:
    """`asyncio.run`, on uvloop when it is installed and wanted."""
    if uvloop_wanted():
        try:
            import uvloop
        except ImportError:
            pass
        else:
            result: T = uvloop.run(main, debug=debug)
            return result
    return asyncio.run(main, debug=debug)


def loop_name(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """``"uvloop"`` or ``"asyncio"``: which loop a process ended up on (for logs and reports)."""
    loop = loop or asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


class LoopLag:
    """How late the loop runs a timer due every ``interval`` seconds (one per loop).

    A loop that runs its timers on time has spare capacity; one that runs them late
    is behind, and every extra callback or socket write makes it later.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float = 0.02) -> None:
        self._loop = loop
        self._interval = interval
        #: Lateness of the latest tick, in seconds.
        self.lag = 0.0
        self._due = loop.time() + interval
        self._handle = loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        now = self._loop.time()
        self.lag = max(0.0, now - self._due)
        self._due = now + self._interval
        self._handle = self._loop.call_at(self._due, self._tick)

    def behind(self, threshold: float) -> bool:
        """The loop is late by more than ``threshold`` seconds (now or at the last tick)."""
        return self.lag > threshold or self._loop.time() - self._due > threshold

    def stop(self) -> None:
        self._handle.cancel()


_monitors: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopLag] = (
    weakref.WeakKeyDictionary()
)


def loop_lag() -> LoopLag:
    """The running loop's shared `LoopLag` (started on first use)."""
    loop = asyncio.get_running_loop()
    mon = _monitors.get(loop)
    if mon is None:
        mon = _monitors[loop] = LoopLag(loop)
    return mon
