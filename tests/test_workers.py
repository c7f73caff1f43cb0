"""Several worker processes behind one port: calls spread over them, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import aiohttp
import pytest

from duplex.agents.app import PortInUseError
from duplex.agents.workers import Supervisor, reserve_port

from .workers_app import broken, serve

pytestmark = pytest.mark.timeout(90)
T = TypeVar("T")


async def get(port: int, path: str = "/") -> str:
    # A new connection each time: the kernel picks a worker per connection.
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http,
        http.get(f"http://127.0.0.1:{port}{path}") as resp,
    ):
        assert resp.status == 200
        return await resp.text()


def wait_until(predicate: Callable[[], bool], within_s: float = 30.0) -> bool:
    """Poll a condition another process changes (run off the event loop)."""
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


async def off_loop(fn: Callable[..., T], *args: object) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


@pytest.fixture
def supervisor() -> Iterator[Supervisor]:
    sup = Supervisor(serve, count=2, drain_timeout=10.0)
    sup.start()
    assert sup.wait_serving(60)
    yield sup
    sup.stop()
    sup.supervise(0.1)  # returns once every worker has exited
    assert not any(wait_until(lambda p=pid: _alive(p), 0) for pid in sup.pids)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_connections_spread_over_both_workers(supervisor: Supervisor) -> None:
    pids = {int(await get(supervisor.port)) for _ in range(40)}
    assert pids == set(supervisor.pids)


async def test_sigterm_drains_calls_in_progress(supervisor: Supervisor) -> None:
    # The kernel hashes each connection to a worker, so eight calls can all land on one
    # (1 run in 128). Open calls until both workers report one in progress.
    slow: list[asyncio.Task[str]] = []
    while len(slow) < 8 or not all(supervisor.load_report()):
        assert len(slow) < 40, f"calls never reached both workers: {supervisor.load_report()}"
        slow.append(asyncio.create_task(get(supervisor.port, "/slow?s=3")))
        assert await off_loop(wait_until, lambda n=len(slow): sum(supervisor.load_report()) == n)
    supervisor.stop()
    answers = await asyncio.gather(*slow)  # none dropped mid-call
    assert all(a.startswith("done") for a in answers)
    assert await off_loop(supervisor.supervise, 0.1) == 0
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(supervisor.port)


async def test_a_worker_that_dies_is_started_again(supervisor: Supervisor) -> None:
    victim = supervisor.pids[0]
    os.kill(victim, signal.SIGKILL)
    watch = asyncio.ensure_future(off_loop(supervisor.supervise, 0.1))
    assert await off_loop(wait_until, lambda: victim not in supervisor.pids)
    assert await off_loop(supervisor.wait_serving, 60)
    pids = {int(await get(supervisor.port)) for _ in range(40)}
    assert victim not in pids and len(pids) == 2
    supervisor.stop()
    assert await watch == 0


def test_a_port_another_server_holds_is_refused_not_shared() -> None:
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # even one that would share
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"port {port} on 127.0.0.1 is already in use"):
            reserve_port("127.0.0.1", port)


def test_a_worker_that_cannot_start_stops_the_server_instead_of_restarting() -> None:
    sup = Supervisor(broken, count=2, drain_timeout=5.0)
    sup.start()
    first = set(sup.pids)
    assert sup.supervise(0.1) == 1  # returns: no restart loop
    assert set(sup.pids) == first  # nobody was started again
    assert not any(_alive(pid) for pid in first)
