"""``agent dev --workers N``: the playground in N processes behind one port.

Each worker loads the app, builds its backend and serves calls on its own event loop;
the kernel (``SO_REUSEPORT``) gives each new connection to one of them. A call is one
``POST /offer`` whose peer connection (media and data channel, over UDP) is then held
by the worker that answered it, so a call never needs two workers.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from duplex.agents.app import choose_backend, default_backend_name, load_app
from duplex.agents.logs import configure_logging
from duplex.agents.loop import run as run_loop
from duplex.agents.workers import Worker

from .playground import serve

__all__ = ["DevOptions", "serve_worker"]


@dataclass(frozen=True)
class DevOptions:
    """What a worker needs to rebuild the playground in its own process (picklable)."""

    app: str
    backend: str | None = None
    host: str = "127.0.0.1"
    token: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    record: str | None = None
    metrics_port: int | None = None
    telemetry: bool = False
    log_level: str | None = None
    log_format: str | None = None
    drain_timeout: float = 30.0


def worker_metrics_port(port: int | None, index: int) -> int | None:
    """Each worker serves its own metrics: ``--metrics-port P`` gives worker i port P+i."""
    if port is None or port == 0:
        return port
    return port + index


def worker_status(worker: Worker) -> Callable[[], dict[str, Any]]:
    """What ``/health`` adds for a worker: who answered, and every worker's calls."""
    pid = os.getpid()

    def status() -> dict[str, Any]:
        return {"worker": worker.index, "pid": pid, "workers": worker.table()}

    return status


def serve_worker(options: DevOptions, worker: Worker) -> None:
    """The body of one worker process (the supervisor starts it with ``spawn``)."""
    configure_logging(options.log_level, options.log_format)
    spec = load_app(options.app)
    backend = choose_backend(options.backend)
    name = options.backend or default_backend_name()
    hooks = []
    if options.metrics_port is not None or options.telemetry:
        from duplex.agents.telemetry import SessionTelemetry, setup_telemetry

        setup = setup_telemetry(
            metrics_port=worker_metrics_port(options.metrics_port, worker.index),
            metrics_host=options.host,
        )
        if setup.metrics_url:
            print(f"  metrics (worker {worker.index}): {setup.metrics_url}", flush=True)
        hooks.append(SessionTelemetry(backend_name=name).prepare)
    run_loop(
        serve(
            spec,
            backend,
            host=options.host,
            port=worker.port,
            backend_name=name,
            record_dir=options.record,
            prepare=hooks,
            on_ready=lambda _server: worker.report_serving(),
            server_options={
                "token": options.token,
                "allowed_hosts": options.allowed_hosts,
                "allowed_origins": options.allowed_origins,
                "reuse_port": True,
                "on_load": worker.report_load,
                "status": worker_status(worker),
            },
            drain_timeout=options.drain_timeout,
        )
    )
