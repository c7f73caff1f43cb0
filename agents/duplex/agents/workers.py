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
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import Synchronized
from typing import Any

from .app import translate_bind_errors

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
    #: Every worker's load and pid (shared), so any worker can show the whole table.
    loads: list[Synchronized[int]] = field(default_factory=list)
    pids: Any = None  # a multiprocessing Array of ints, one per worker

    @property
    def supervised(self) -> bool:
        """Whether siblings share the port (then the server binds with ``SO_REUSEPORT``)."""
        return self.count > 1

    def report_load(self, active_calls: int) -> None:
        self.load.value = active_calls

    def report_serving(self) -> None:
        if self.pids is not None:
            self.pids[self.index] = os.getpid()
        if self.serving is not None:
            self.serving.set()

    def table(self) -> list[dict[str, int]]:
        """Calls in progress per worker, as each last reported them (for ``/health``)."""
        loads = self.loads or [self.load]
        pids = list(self.pids) if self.pids is not None else [os.getpid()] * len(loads)
        return [
            {"index": i, "pid": int(pid), "calls": int(v.value)}
            for i, (v, pid) in enumerate(zip(loads, pids, strict=False))
        ]


WorkerTarget = Callable[[Worker], Any]


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (without listening) so port 0 becomes one real port every worker can share.

    The port is first bound without ``SO_REUSEPORT``: a port another server holds is
    refused (`PortInUseError`) instead of silently shared with it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with translate_bind_errors(host, port), socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        port = probe.getsockname()[1]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        with translate_bind_errors(host, port):
            sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
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
        log_every_s: float = 10.0,
    ) -> None:
        if count < 1:
            raise ValueError("workers must be at least 1")
        self.target = target
        self.count = count
        self.host = host
        self.drain_timeout = drain_timeout
        self.restart = restart
        self.log_every_s = log_every_s
        self._sock = reserve_port(host, port)
        self.port: int = self._sock.getsockname()[1]
        self._ctx = multiprocessing.get_context("spawn")
        self.loads = [self._ctx.Value("i", 0) for _ in range(count)]
        self._pids = self._ctx.Array("i", count)
        self._serving = [self._ctx.Event() for _ in range(count)]
        self._procs: list[Any] = [None] * count
        self._stopping = False

    def start(self) -> None:
        for i in range(self.count):
            self._spawn(i)

    def _spawn(self, index: int) -> None:
        self._serving[index].clear()
        self.loads[index].value = 0
        worker = Worker(
            index,
            self.count,
            self.host,
            self.port,
            self.loads[index],
            self._serving[index],
            loads=self.loads,
            pids=self._pids,
        )
        proc = self._ctx.Process(
            target=self.target, args=(worker,), name=f"duplex-worker-{index}", daemon=False
        )
        proc.start()
        self._procs[index] = proc
        self._pids[index] = proc.pid or 0

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

    def describe_load(self) -> str:
        """One line for the log: each worker's pid and calls in progress."""
        return ", ".join(
            f"worker {i} (pid {pid}): {calls} call{'' if calls == 1 else 's'}"
            for i, (pid, calls) in enumerate(zip(self.pids, self.load_report(), strict=False))
        )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Ask every worker to exit: SIGTERM drains (finish calls in progress), SIGINT hangs up."""
        self._stopping = True
        for p in self._procs:
            if p is not None and p.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, sig)

    def supervise(self, poll_s: float = 0.5) -> int:
        """Block until every worker has exited after `stop` (or a signal); returns 0 if clean."""
        previous = {}
        if threading.current_thread() is threading.main_thread():
            previous = {
                sig: signal.signal(sig, lambda signum, _: self.stop(signum))
                for sig in (signal.SIGTERM, signal.SIGINT)
            }
        try:
            deadline: float | None = None
            logged: list[int] | None = None
            next_log = time.monotonic()
            while True:
                if self.log_every_s > 0 and time.monotonic() >= next_log:
                    next_log = time.monotonic() + self.log_every_s
                    if self.load_report() != logged:
                        logged = self.load_report()
                        logger.info("load: %s", self.describe_load())
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
                else:
                    for i, p in enumerate(self._procs):
                        if p is None or p.is_alive():
                            continue
                        if not self._serving[i].is_set():
                            # It never served: starting it again would fail the same way.
                            logger.error("worker %d failed to start (%s); stopping", i, p.exitcode)
                            self.stop(signal.SIGINT)
                            break
                        if self.restart:
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
    target: WorkerTarget,
    *,
    count: int,
    host: str,
    port: int,
    drain_timeout: float = 30.0,
    on_ready: Callable[[Supervisor], None] | None = None,
    ready_timeout: float = 120.0,
) -> int:
    """Serve with ``count`` processes until SIGINT/SIGTERM; one process runs ``target`` here.

    ``on_ready(supervisor)`` is called once every worker accepts calls (print the URL there).
    """
    if count <= 1:
        value = multiprocessing.get_context("spawn").Value("i", 0)
        target(Worker(0, 1, host, port, value))
        return 0
    sup = Supervisor(target, count=count, host=host, port=port, drain_timeout=drain_timeout)
    sup.start()
    if on_ready is not None:
        # Told from a thread, so a signal during start-up still reaches `supervise`.
        def tell() -> None:
            if sup.wait_serving(ready_timeout):
                on_ready(sup)
            elif not sup._stopping:
                logger.error("not every worker started within %.0f s", ready_timeout)

        threading.Thread(target=tell, name="duplex-workers-ready", daemon=True).start()
    return sup.supervise()
