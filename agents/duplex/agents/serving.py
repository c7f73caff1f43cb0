"""What every server of ours does the same way: bind an aiohttp app, and serve until told to stop.

The playground, the phone server and any later one share these, so a port in use reads
the same everywhere and SIGINT/SIGTERM always end with a clean hang-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable

from aiohttp import web

from .app import translate_bind_errors


async def bind_app(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port``; returns the runner and the real port (``port`` 0)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        with translate_bind_errors(host, port):
            await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, int(runner.addresses[0][1])


async def serve_until_stopped(
    start: Callable[[], Awaitable[object]],
    close: Callable[[], Awaitable[None]],
    *,
    on_ready: Callable[[], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """``start``, then wait for ``stop`` (or SIGINT/SIGTERM), then ``close`` whatever happened."""
    await start()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        if on_ready is not None:
            on_ready()
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        await close()
