"""Several worker processes behind one port, so a server uses every core.

The supervisor reserves the port (``SO_REUSEPORT``), starts ``workers`` processes that
each bind it again and run their own event loop and calls, and reports each worker's
load. On SIGTERM or SIGINT it asks every worker to drain (stop taking calls, finish the
ones in progress, within ``drain_timeout``) and waits for them; a worker that dies while
serving is started again. The kernel spreads new connections over the workers.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from typing import Any

logger = logging.getLogger("duplex.agents.workers")


@dataclass
class Worker:
    """What a worker process is told: who it is and where to bind."""

    index: int
    count: int
    host: str
    port: int
    #: Calls in progress, as this worker last reported them (shared with the supervisor).
    load: Synchronized[int]
    serving: Any = None  # a multiprocessing Event, set once the worker accepts calls

    def report_load(self, active_calls: int) -> None:
        self.load.value = active_calls

    def report_serving(self) -> None:
        if self.serving is not None:
            self.serving.set()


WorkerTarget = Callable[[Worker], Any]


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (without listening) so port 0 becomes one real port every worker can share."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


class Supervisor:
    """Runs ``target(worker)`` in ``count`` processes until asked to stop."""

    def __init__(
        self,
        target: WorkerTarget,
        *,
        count: int,
        host: str = "127.0.0.1",
        port: int = 0,
        drain_timeout: float = 30.0,
        restart: bool = True,
    ) -> None:
        if count < 1:
            raise ValueError("workers must be at least 1")
        self.target = target
        self.count = count
        self.host = host
        self.drain_timeout = drain_timeout
        self.restart = restart
        self._sock = reserve_port(host, port)
        self.port: int = self._sock.getsockname()[1]
        self._ctx = multiprocessing.get_context("spawn")
        self.loads = [self._ctx.Value("i", 0) for _ in range(count)]
        self._serving = [self._ctx.Event() for _ in range(count)]
        self._procs: list[Any] = [None] * count
        self._stopping = False

    def start(self) -> None:
        for i in range(self.count):
            self._spawn(i)

    def _spawn(self, index: int) -> None:
        self._serving[index].clear()
        worker = Worker(
            index, self.count, self.host, self.port, self.loads[index], self._serving[index]
        )
        proc = self._ctx.Process(
            target=self.target, args=(worker,), name=f"duplex-worker-{index}", daemon=False
        )
        proc.start()
        self._procs[index] = proc

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p is not None]

    def wait_serving(self, timeout: float = 60.0) -> bool:
        """Block until every worker accepts calls (a blocking call: run it off the loop)."""
        deadline = time.monotonic() + timeout
        return all(ev.wait(max(0.0, deadline - time.monotonic())) for ev in self._serving)

    def load_report(self) -> list[int]:
        """Calls in progress per worker."""
        return [int(v.value) for v in self.loads]

    def stop(self) -> None:
        """Ask every worker to drain and exit (SIGTERM)."""
        self._stopping = True
        for p in self._procs:
            if p is not None and p.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGTERM)

    def supervise(self, poll_s: float = 0.5) -> int:
        """Block until every worker has exited after `stop` (or a signal); returns 0 if clean."""
        previous = {}
        if threading.current_thread() is threading.main_thread():
            previous = {
                sig: signal.signal(sig, lambda *_: self.stop())
                for sig in (signal.SIGTERM, signal.SIGINT)
            }
        try:
            deadline: float | None = None
            while True:
                alive = [p for p in self._procs if p is not None and p.is_alive()]
                if self._stopping:
                    if deadline is None:
                        deadline = time.monotonic() + self.drain_timeout + 5.0
                    if not alive:
                        break
                    if time.monotonic() > deadline:
                        for p in alive:
                            p.kill()
                        break
                elif self.restart:
                    for i, p in enumerate(self._procs):
                        if p is not None and not p.is_alive():
                            logger.error("worker %d exited (%s); starting it again", i, p.exitcode)
                            self._spawn(i)
                for p in alive:
                    p.join(poll_s / max(1, len(alive)))
            return 0 if all(p is None or p.exitcode == 0 for p in self._procs) else 1
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._sock.close()


def run_workers(
    target: WorkerTarget, *, count: int, host: str, port: int, drain_timeout: float = 30.0
) -> int:
    """Serve with ``count`` processes; one process simply runs ``target`` here."""
    if count <= 1:
        value = multiprocessing.get_context("spawn").Value("i", 0)
        target(Worker(0, 1, host, port, value))
        return 0
    sup = Supervisor(target, count=count, host=host, port=port, drain_timeout=drain_timeout)
    sup.start()
    return sup.supervise()
