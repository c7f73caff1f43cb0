"""Idle callers: nothing said for `user_idle_timeout` seconds after the agent finished speaking.

The watcher only reads state changes the session already publishes, and its timer comes
from a `Scheduler`, so a test drives it with `duplex.agents.testing.ManualScheduler`
instead of waiting real seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from .events import AgentStateChanged, UserIdle, UserStateChanged

if TYPE_CHECKING:
    from .session import AgentSession


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """What the watcher needs of a clock: `asyncio.AbstractEventLoop.call_later` fits."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle: ...


class IdleWatcher:
    """Counts silences in a row; caller speech or typed text starts the count again."""

    def __init__(
        self,
        timeout: float | None,
        on_idle: Callable[[int], None],
        scheduler: Scheduler | None = None,
    ) -> None:
        self.timeout = timeout
        self._on_idle = on_idle
        self._scheduler = scheduler
        self._timer: TimerHandle | None = None
        self._count = 0
        self._closed = False

    @property
    def armed(self) -> bool:
        return self._timer is not None

    def agent_state(self, old: str, new: str) -> None:
        """Arm when the agent stops speaking and waits; any other activity disarms."""
        if new == "listening" and old == "speaking":
            self._arm()
        elif new != "listening":
            self._disarm()

    def user_active(self) -> None:
        """The caller spoke or typed: they are here."""
        self._count = 0
        self._disarm()

    def close(self) -> None:
        self._closed = True
        self._disarm()

    def _arm(self) -> None:
        self._disarm()
        if self.timeout is None or self._closed:
            return
        scheduler = self._scheduler or asyncio.get_running_loop()
        self._timer = scheduler.call_later(self.timeout, self._fire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        if self._closed:
            return
        self._count += 1
        self._on_idle(self._count)


def watch_idle(
    session: AgentSession, timeout: float | None, scheduler: Scheduler | None = None
) -> IdleWatcher:
    """Wire a watcher to ``session``'s public events; on a silence, `UserIdle` and the
    agent's `on_user_idle` hook (the agent of the moment, after a handoff too)."""

    def idle(count: int) -> None:
        if session.closed.is_set() or session.agent_state == "closed":
            return
        session.emit(UserIdle(count, timeout or 0.0))
        session.spawn(session.agent.on_user_idle(session, count), "user-idle")

    watcher = IdleWatcher(timeout, idle, scheduler)
    session.on(AgentStateChanged, lambda e: watcher.agent_state(e.old, e.new))
    session.on(UserStateChanged, lambda e: watcher.user_active() if e.new == "speaking" else None)
    return watcher
