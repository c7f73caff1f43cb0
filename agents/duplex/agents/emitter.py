"""A typed event emitter: handlers are keyed by event class, so mypy checks them."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

logger = logging.getLogger("duplex.agents")

E = TypeVar("E")
Handler = Callable[[E], Awaitable[None] | None]


class Emitter:
    """Synchronous fan-out; coroutine handlers run as tasks so one slow handler blocks nothing.

    Handlers and waiters match by one rule: ``isinstance(event, event_type)``, so a
    subscription to a base class sees its subclasses too.
    """

    def __init__(self) -> None:
        self._handlers: dict[type[Any], list[Handler[Any]]] = {}
        self._waiters: list[
            tuple[type[Any], Callable[[Any], bool] | None, asyncio.Future[Any]]
        ] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def on(self, event_type: type[E], handler: Handler[E]) -> Callable[[], None]:
        """Subscribe; returns a function that unsubscribes."""
        self._handlers.setdefault(event_type, []).append(handler)

        def off() -> None:
            handlers = self._handlers.get(event_type, [])
            if handler in handlers:
                handlers.remove(handler)

        return off

    def emit(self, event: object) -> None:
        matching = [
            h for etype, hs in self._handlers.items() if isinstance(event, etype) for h in hs
        ]
        for handler in matching:
            try:
                result = handler(event)
            except Exception:
                logger.exception("event handler for %s failed", type(event).__name__)
                continue
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(self._guard(result, type(event).__name__))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        for waiter in list(self._waiters):
            etype, predicate, fut = waiter
            if (
                isinstance(event, etype)
                and not fut.done()
                and (predicate is None or predicate(event))
            ):
                fut.set_result(event)
                self._waiters.remove(waiter)

    def next_event(
        self, event_type: type[E], predicate: Callable[[E], bool] | None = None
    ) -> asyncio.Future[E]:
        """A future for the next matching event, registered now (before anything else runs)."""
        fut: asyncio.Future[E] = asyncio.get_running_loop().create_future()
        waiter = (event_type, predicate, fut)
        self._waiters.append(waiter)

        def forget(_: asyncio.Future[E]) -> None:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

        fut.add_done_callback(forget)
        return fut

    async def wait_for(
        self,
        event_type: type[E],
        predicate: Callable[[E], bool] | None = None,
        *,
        timeout: float | None = None,
    ) -> E:
        """The next event of this type (matching ``predicate``); raises TimeoutError."""
        return await asyncio.wait_for(self.next_event(event_type, predicate), timeout)

    @staticmethod
    async def _guard(aw: Awaitable[Any], name: str) -> None:
        try:
            await aw
        except Exception:
            logger.exception("async event handler for %s failed", name)
