"""A tiny server for the multi-worker tests: answers with its pid; drains on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal

from aiohttp import web

from duplex.agents.workers import Worker


async def _main(worker: Worker) -> None:
    active = 0

    async def pid(request: web.Request) -> web.Response:
        return web.Response(text=str(os.getpid()))

    async def slow(request: web.Request) -> web.Response:
        nonlocal active
        active += 1
        worker.report_load(active)
        try:
            await asyncio.sleep(float(request.query.get("s", "1")))
            return web.Response(text=f"done {os.getpid()}")
        finally:
            active -= 1
            worker.report_load(active)

    app = web.Application()
    app.add_routes([web.get("/", pid), web.get("/slow", slow)])
    runner = web.AppRunner(app, shutdown_timeout=10.0)
    await runner.setup()
    site = web.TCPSite(runner, worker.host, worker.port, reuse_port=True)
    await site.start()
    worker.report_serving()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()  # stops accepting, lets requests in progress finish


def serve(worker: Worker) -> None:
    asyncio.run(_main(worker))


def broken(worker: Worker) -> None:
    """A worker whose app cannot start (a missing credential, an import error)."""
    raise SystemExit(3)
