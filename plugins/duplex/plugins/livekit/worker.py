"""`agent run`: a worker that the LiveKit server dispatches rooms to.

livekit-agents' `AgentServer` does the fleet work: it registers over WebSocket,
answers availability by its load, keeps prewarmed job processes, launches one
job per assigned room and drains on shutdown. Each job here loads the app,
joins the room through `RoomTransport` and runs one `AgentSession` until the
call ends.

The entrypoint and prewarm are module-level callables bound to a picklable
`WorkerConfig`, because job processes receive them by pickling.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from duplex.agents.app import AppSpec, choose_backend, load_app
from duplex.agents.backend import Backend

from .auth import LiveKitCredentials
from .room import RoomTransport

if TYPE_CHECKING:
    from livekit.agents import AgentServer, JobContext, JobProcess, JobRequest

logger = logging.getLogger("duplex.plugins.livekit.worker")


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a job needs to rebuild the app in its own process."""

    app: str
    backend: str | None = None
    agent_name: str = ""
    #: Display name the agent joins with.
    display_name: str = "agent"
    participant_identity: str | None = None
    participant_kinds: str | None = None
    output_buffer_ms: float = 200.0
    #: Accept at most this many concurrent jobs (load = jobs / max_jobs); None: CPU load.
    max_jobs: int | None = None
    #: Trace and measure each session (OpenTelemetry; the ``otel`` extra).
    telemetry: bool = False


def prewarm(config: WorkerConfig, proc: JobProcess) -> None:
    """Runs once per job process before any job: import the app, build the backend."""
    if config.telemetry:
        from duplex.agents.telemetry import setup_telemetry

        setup_telemetry()  # a job process exports its own spans (OTLP); no-op in the worker's
    proc.userdata["app"] = load_app(config.app)
    proc.userdata["backend"] = choose_backend(config.backend)
    logger.info("prewarmed %s", config.app)


async def accept_job(config: WorkerConfig, request: JobRequest) -> None:
    await request.accept(
        name=config.display_name,
        identity=f"agent-{request.id}",
        attributes={"duplex.app": config.app},
    )


def job_load(config: WorkerConfig, server: AgentServer) -> float:
    """Load in [0, 1] the server uses to decide whether to offer us more rooms."""
    if config.max_jobs is None:
        from livekit.agents.worker import _DefaultLoadCalc

        return float(_DefaultLoadCalc.get_load(server))
    return min(1.0, len(server.active_jobs) / max(config.max_jobs, 1))


async def run_job(config: WorkerConfig, ctx: JobContext) -> None:
    """One room: join, run the session until the caller leaves or the job is terminated."""
    spec: AppSpec = ctx.proc.userdata.get("app") or load_app(config.app)
    backend: Backend = ctx.proc.userdata.get("backend") or choose_backend(config.backend)
    await ctx.connect()
    caps = backend.capabilities
    publisher = ctx.job.participant.identity if ctx.job.HasField("participant") else ""
    credentials = None
    with contextlib.suppress(Exception):
        credentials = LiveKitCredentials.from_env()
    transport = RoomTransport(
        room=ctx.room,
        credentials=credentials,
        participant_identity=config.participant_identity or publisher or None,
        participant_kinds=config.participant_kinds,
        input_rate=caps.input_sample_rate,
        output_rate=caps.output_sample_rate,
        output_buffer_ms=config.output_buffer_ms,
    )
    prepare = None
    if config.telemetry:
        from duplex.agents.telemetry import SessionTelemetry

        prepare = SessionTelemetry(backend_name=config.backend).prepare
    session = await spec.start(transport, backend, prepare=prepare)

    async def close(reason: str) -> None:
        await session.aclose(f"job shutdown: {reason}")

    ctx.add_shutdown_callback(close)
    await session.closed.wait()
    logger.info("session in room %s ended (%s)", ctx.room.name, transport.close_reason)
    ctx.shutdown(transport.close_reason or "session closed")


def build_server(
    config: WorkerConfig,
    *,
    credentials: LiveKitCredentials,
    devmode: bool = False,
    executor: str | None = None,
    num_idle_processes: int | None = None,
    load_threshold: float | None = None,
    drain_timeout: int = 600,
    host: str = "127.0.0.1",
    port: int | None = None,
    prometheus_port: int | None = None,
) -> AgentServer:
    """An `AgentServer` whose jobs run ``config.app``, each in a thread unless ``executor``
    is ``"process"`` (docs/deploy.md has the figures: a duplex call costs ~2 MB in a
    thread and ~95 MB as its own process, plus ~2 CPU-seconds to prewarm that process).

    Its health-check HTTP server binds ``host``: loopback unless told otherwise (a
    container whose orchestrator probes it from outside passes ``0.0.0.0``).
    """
    from livekit import agents

    kind = executor or "thread"
    api_key, api_secret = credentials.api_key, credentials.api_secret
    if not api_key or not api_secret:
        from duplex.agents.errors import ConfigurationError

        raise ConfigurationError(
            "a worker needs LIVEKIT_API_KEY and LIVEKIT_API_SECRET (or --api-key/--api-secret)"
        )
    options: dict[str, Any] = {
        "job_executor_type": agents.JobExecutorType(kind),
        "ws_url": credentials.url,
        "api_key": api_key,
        "api_secret": api_secret,
        "drain_timeout": drain_timeout,
        "host": host,
        "setup_fnc": functools.partial(prewarm, config),
        "load_fnc": functools.partial(job_load, config),
    }
    if num_idle_processes is not None:
        options["num_idle_processes"] = num_idle_processes
    if load_threshold is not None:
        options["load_threshold"] = load_threshold if load_threshold > 0 else math.inf
    if port is not None:
        options["port"] = port
    if prometheus_port is not None:
        options["prometheus_port"] = prometheus_port
    server = agents.AgentServer(**options)
    server.rtc_session(
        functools.partial(run_job, config),
        agent_name=config.agent_name,
        on_request=functools.partial(accept_job, config),
    )
    return server


async def serve(server: AgentServer, *, devmode: bool = False, drain_timeout: float = 600) -> None:
    """Run until SIGINT/SIGTERM, then drain: finish the calls in progress, take no new ones."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    running = asyncio.ensure_future(server.run(devmode=devmode))
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            logger.info("draining: finishing %d active job(s)", len(server.active_jobs))
            # a second signal while draining gives up on the remaining calls
            stop.clear()
            drain = asyncio.ensure_future(server.drain(timeout=int(drain_timeout)))
            forced = asyncio.ensure_future(stop.wait())
            await asyncio.wait({drain, forced}, return_when=asyncio.FIRST_COMPLETED)
            forced.cancel()
            if not drain.done():
                drain.cancel()
                logger.warning("forced shutdown with jobs still running")
            elif drain.exception() is not None:
                logger.warning("drain did not finish: %r", drain.exception())
        await server.aclose()
        await running
    finally:
        stopping.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
