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

from aiohttp import web

from .app import translate_bind_errors

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


def draining_response() -> web.Response:
    """What a draining server answers a new call: 503, come back (to a sibling) shortly."""
    return web.json_response(
        {"error": "this server is shutting down; try again"},
        status=503,
        headers={"Retry-After": "1", "Connection": "close"},
    )


async def serve_until_stopped(
    start: Callable[[], Awaitable[object]],
    close: Callable[[], Awaitable[None]],
    *,
    on_ready: Callable[[], None] | None = None,
    stop: asyncio.Event | None = None,
    drain: Callable[[], Awaitable[None]] | None = None,
    drain_timeout: float = 30.0,
) -> None:
    """``start``, then wait for ``stop`` (or SIGINT/SIGTERM), then ``close`` whatever happened.

    With ``drain`` (a worker), SIGTERM first awaits ``drain()`` for up to ``drain_timeout``
    seconds (SIGINT or ``stop`` cuts it short); without it SIGTERM closes at once.
    """
    await start()
    stop = stop or asyncio.Event()
    draining = asyncio.Event()
    loop = asyncio.get_running_loop()
    handlers = {signal.SIGINT: stop.set, signal.SIGTERM: draining.set if drain else stop.set}
    for sig, handler in handlers.items():
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, handler)
    try:
        if on_ready is not None:
            on_ready()
        await _first(stop.wait(), draining.wait())
        if drain is not None and draining.is_set() and not stop.is_set():
            drained = asyncio.ensure_future(drain())
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
        await close()


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
