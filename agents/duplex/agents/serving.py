"""What every server of ours does the same way: bind an aiohttp app, and serve until told to stop.

The playground, the phone server and any later one share these, so a port in use reads
the same everywhere and SIGINT/SIGTERM always end with a clean hang-up. A server run as
one of several workers (`duplex.agents.workers`) binds with ``reuse_port`` and drains on
SIGTERM: it stops listening (the kernel hands new connections to its siblings), answers
what still reaches it 503, and finishes its calls before it hangs up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from aiohttp import web

from .app import translate_bind_errors
from .backend import Backend

log = logging.getLogger("duplex.agents.serving")


async def bind_app(
    app: web.Application, host: str, port: int, *, reuse_port: bool = False
) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port``; returns the runner and the real port (``port`` 0).

    ``reuse_port`` joins the ``SO_REUSEPORT`` group of sibling workers on the same port.
    """
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
    try:
        with translate_bind_errors(host, port):
            await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, int(runner.addresses[0][1])


async def stop_listening(runner: web.AppRunner | None) -> None:
    """Accept no new connections; those already open (calls, keep-alives) carry on."""
    if runner is None:
        return
    for site in list(runner.sites):
        await site.stop()


class CallLoad:
    """A server's calls in progress, as its drain and its supervisor see them.

    One owner for what the playground and the phone server both track: whether it is
    draining, whether it is idle, and the count reported to the supervisor on change.
    """

    def __init__(self, on_load: Callable[[int], None] | None = None) -> None:
        #: Set by `drain`: new calls are answered 503.
        self.draining = False
        self._on_load = on_load
        self._idle = asyncio.Event()
        self._idle.set()

    def changed(self, calls: int) -> None:
        """The server now holds ``calls`` calls."""
        if calls:
            self._idle.clear()
        else:
            self._idle.set()
        if self._on_load is not None:
            self._on_load(calls)

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def drain(self, runner: web.AppRunner | None) -> None:
        """Take no new calls (stop listening) and wait for those in progress."""
        self.draining = True
        await stop_listening(runner)
        await self._idle.wait()


class AppServer:
    """An aiohttp app served on ``host:port``, as a worker among siblings or alone.

    The one place the playground and the phone server bind, drain and stop: a subclass
    builds its app (routes, middlewares) and tracks its calls in `load`; `start` binds,
    `drain` stops listening and waits for the calls, `stop_serving` ends the app.
    """

    def __init__(
        self,
        app: web.Application,
        host: str,
        port: int,
        *,
        reuse_port: bool = False,
        on_load: Callable[[int], None] | None = None,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.reuse_port = reuse_port
        self.load = CallLoad(on_load)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> str:
        """Bind and serve; returns the URL (with the real port when ``port`` was 0)."""
        self._runner, self.port = await bind_app(
            self.app, self.host, self.port, reuse_port=self.reuse_port
        )
        return self.url

    @property
    def draining(self) -> bool:
        """Set by `drain`: new calls are answered 503."""
        return self.load.draining

    async def drain(self) -> None:
        """Take no new calls (stop listening; answer 503) and wait for those in progress."""
        await self.load.drain(self._runner)

    async def wait_idle(self) -> None:
        """Until no call is live."""
        await self.load.wait_idle()

    async def stop_serving(self) -> None:
        """Close the listening socket and every connection (after the calls were hung up)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


def draining_response() -> web.Response:
    """What a draining server answers a new call: 503, come back (to a sibling) shortly."""
    return web.json_response(
        {"error": "this server is shutting down; try again"},
        status=503,
        headers={"Retry-After": "1", "Connection": "close"},
    )


class CallServer(Protocol):
    """A server of calls as `serve_until_stopped` runs it (the playground, the phone server)."""

    async def start(self) -> str: ...

    async def drain(self) -> None: ...

    async def aclose(self) -> None: ...


S = TypeVar("S", bound=CallServer)


async def serve_until_stopped(
    server: S,
    backend: Backend,
    *,
    on_ready: Callable[[S], None] | None = None,
    stop: asyncio.Event | None = None,
    drain_timeout: float | None = None,
) -> None:
    """Prewarm ``backend``, start ``server``, wait for ``stop`` (or SIGINT/SIGTERM), then
    close the server and the backend whatever happened.

    With ``drain_timeout`` (a worker among several), SIGTERM first drains the server
    (no new calls; those in progress finish) for up to that many seconds (SIGINT or
    ``stop`` cuts it short); without it SIGTERM closes at once.
    """
    await backend.prewarm()
    await server.start()
    stop = stop or asyncio.Event()
    draining = asyncio.Event()
    loop = asyncio.get_running_loop()
    on_term = stop.set if drain_timeout is None else draining.set
    handlers = {signal.SIGINT: stop.set, signal.SIGTERM: on_term}
    for sig, handler in handlers.items():
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, handler)
    try:
        if on_ready is not None:
            on_ready(server)
        await _first(stop.wait(), draining.wait())
        if drain_timeout is not None and draining.is_set() and not stop.is_set():
            drained = asyncio.ensure_future(server.drain())
            await asyncio.sleep(0)  # it has begun: new calls are refused from here on
            log.info("draining: no new calls; finishing those in progress")
            try:
                await asyncio.wait_for(_first(drained, stop.wait()), drain_timeout)
            except asyncio.TimeoutError:
                log.warning("drain timeout (%.0f s): hanging up the calls left", drain_timeout)
    finally:
        for sig in handlers:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        try:
            await server.aclose()
        finally:
            await backend.aclose()


async def _first(*aws: Awaitable[object]) -> None:
    """Until the first of ``aws`` finishes; the others are cancelled."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            t.result()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
