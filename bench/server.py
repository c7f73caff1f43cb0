"""The benchmark's OpenAI Realtime server: one process, serving every session of a run.

It is lean on purpose (no schema validation, a pre-encoded reply) so that its own
CPU stays small, and it runs in its own process so that CPU is not charged to the
framework under test. It keeps, per session, the timestamps the analysis needs:
when the append holding the last speech sample of a turn arrived, and when the
first audio delta of each reply was sent (``time.monotonic()``, which is
system-wide on Linux, so the callers' clocks compare).

Run: ``python -m bench.server`` prints ``PORT <n>`` once listening. ``GET /bench/stats``
returns the records; ``POST /bench/reset`` clears them between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections import Counter

from aiohttp import web

from .server_conn import Connection
from .server_state import ServerStats


class BenchServer:
    def __init__(self) -> None:
        self.stats = ServerStats()
        self.connections: set[Connection] = set()
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, port: int = 0) -> int:
        app = web.Application()
        app.router.add_get("/v1/realtime", self._realtime)
        app.router.add_get("/bench/stats", self._get_stats)
        app.router.add_post("/bench/reset", self._reset)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, backlog=1024)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self.port

    async def close(self) -> None:
        for conn in list(self.connections):
            await conn.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _realtime(self, request: web.Request) -> web.StreamResponse:
        sid = request.query.get("model", "anonymous")
        ws = web.WebSocketResponse(max_msg_size=32 * 1024 * 1024, compress=False)
        await ws.prepare(request)
        conn = Connection(ws, sid, self.stats)
        self.connections.add(conn)
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)
        return ws

    async def _get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.snapshot(len(self.connections)))

    async def _reset(self, request: web.Request) -> web.Response:
        self.stats.sessions.clear()
        self.stats.errors = Counter()
        return web.json_response({"ok": True})


async def _main(port: int) -> None:
    server = BenchServer()
    bound = await server.start(port)
    print(f"PORT {bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args.port))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
