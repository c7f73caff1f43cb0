"""Micro-benchmarks against the benchmark server, run in its own process (its CPU is not ours)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_against_server(make: Callable[[str], Coroutine[Any, Any, T]], *, uvloop: bool) -> T:
    """Start `bench.server`, run ``make(its base URL)`` on asyncio (or uvloop), stop the server."""
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.server"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline().split()[1])
        coro = make(f"http://127.0.0.1:{port}/v1")
        if uvloop:
            import uvloop as _uvloop

            result: T = _uvloop.run(coro)
            return result
        return asyncio.run(coro)
    finally:
        server.terminate()
        server.wait(10)
