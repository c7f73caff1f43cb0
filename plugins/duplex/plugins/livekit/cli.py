"""``agent run`` (a LiveKit worker) and ``agent join`` (one bot, one room).

Only argparse is imported here: the CLI loads every command's ``register`` at
start-up, and the LiveKit SDKs are imported when a command actually runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from typing import TYPE_CHECKING

from duplex.agents.cli import Subparsers, add_app_arguments
from duplex.agents.loop import run as run_loop

if TYPE_CHECKING:
    from duplex.agents.session import AgentSession
    from livekit import rtc

log = logging.getLogger("duplex.plugins.livekit")


#: A file holding the API secret (e.g. a mounted container secret), when no secret is given.
SECRET_FILE_ENV = "LIVEKIT_API_SECRET_FILE"


def _add_server_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=None, help="LiveKit server URL (default: $LIVEKIT_URL)")
    p.add_argument("--api-key", default=None, help="API key (default: $LIVEKIT_API_KEY)")
    p.add_argument(
        "--api-secret",
        default=None,
        help="API secret (default: $LIVEKIT_API_SECRET). Prefer the variable or "
        "--api-secret-file: command-line arguments are visible to every user in `ps`",
    )
    p.add_argument(
        "--api-secret-file",
        default=None,
        metavar="PATH",
        help=f"read the API secret from this file (default: ${SECRET_FILE_ENV})",
    )


def api_secret(args: argparse.Namespace, env: dict[str, str] | None = None) -> str | None:
    """The secret from --api-secret, --api-secret-file, $LIVEKIT_API_SECRET or its file variable.

    None lets the credentials fall back to the environment as before.
    """
    import os

    from duplex.agents.errors import ConfigurationError

    env = dict(os.environ) if env is None else env
    if args.api_secret:
        return str(args.api_secret)
    path = args.api_secret_file or (
        None if env.get("LIVEKIT_API_SECRET") else env.get(SECRET_FILE_ENV)
    )
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            secret = f.read().strip()
    except OSError as e:
        raise ConfigurationError(f"cannot read the API secret file {path}: {e.strerror}") from None
    if not secret:
        raise ConfigurationError(f"the API secret file {path} is empty")
    return secret


def _add_follow_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--participant",
        default=None,
        help="identity of the participant to talk to (default: the first who joins)",
    )
    p.add_argument(
        "--kinds",
        default=None,
        help="participant kinds to talk to, comma-separated: standard,sip,connector,ingress,"
        "egress,agent (default: standard,sip,connector)",
    )


# --- agent run ------------------------------------------------------------------------------
def register_run(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "run",
        help="run a LiveKit worker: the server dispatches rooms to it",
        description="Register with a LiveKit server and run the app in every room it assigns.",
    )
    add_app_arguments(p)
    _add_server_arguments(p)
    _add_follow_arguments(p)
    p.add_argument(
        "--agent-name",
        default="",
        help="register for explicit dispatch under this name (default: automatic dispatch)",
    )
    p.add_argument(
        "--dev",
        action="store_true",
        help="development mode (livekit-agents' devmode: no prewarmed executors, no load limit)",
    )
    p.add_argument(
        "--executor",
        choices=["thread", "process"],
        default=None,
        help="how calls run: thread (default; each call a thread of this worker, ~2 MB; one "
        "worker uses one core, so run one per core) or process (each call its own prewarmed "
        "process, ~95 MB, isolated from the others); see docs/deploy.md",
    )
    p.add_argument(
        "--idle-processes", type=int, default=None, help="prewarmed executors (thread or process)"
    )
    p.add_argument("--max-jobs", type=int, default=None, help="concurrent calls at most")
    p.add_argument(
        "--load-threshold",
        type=float,
        default=None,
        help="stop taking jobs above this load (0..1; 0 disables)",
    )
    p.add_argument(
        "--drain-timeout", type=int, default=600, help="seconds to finish calls on shutdown"
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="health-check HTTP host (default: 127.0.0.1; 0.0.0.0 to be probed from outside)",
    )
    p.add_argument(
        "--port", type=int, default=None, help="health-check HTTP port (default 8081, 0: any)"
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics (livekit-agents' and duplex's) on this port; "
        "traces go to OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set (otel extra)",
    )
    p.set_defaults(run=run_command)


def run_command(args: argparse.Namespace) -> int:
    from duplex.agents.app import choose_backend, load_app
    from duplex.agents.telemetry_env import telemetry_wanted

    from .auth import LiveKitCredentials
    from .worker import WorkerConfig, build_server, serve

    # fail here, before registering, if the app or backend is broken
    load_app(args.app)
    choose_backend(args.backend)
    credentials = LiveKitCredentials.from_env(args.url, args.api_key, api_secret(args))
    telemetry = args.metrics_port is not None or telemetry_wanted()
    if telemetry:
        from duplex.agents.telemetry import SessionTelemetry, setup_telemetry

        # livekit-agents serves prometheus_client's registry on --metrics-port; ours joins it.
        setup_telemetry(metrics_port=args.metrics_port, serve_metrics=False)
        SessionTelemetry()  # its instruments exist (at 0) before the first job
    config = WorkerConfig(
        app=args.app,
        backend=args.backend,
        agent_name=args.agent_name,
        participant_identity=args.participant,
        participant_kinds=args.kinds,
        max_jobs=args.max_jobs,
        telemetry=telemetry,
    )
    server = build_server(
        config,
        credentials=credentials,
        devmode=args.dev,
        executor=args.executor,
        num_idle_processes=args.idle_processes,
        load_threshold=args.load_threshold,
        drain_timeout=args.drain_timeout,
        host=args.host,
        port=args.port,
        prometheus_port=args.metrics_port,
    )
    run_loop(serve(server, devmode=args.dev, drain_timeout=args.drain_timeout))
    return 0


# --- agent join -----------------------------------------------------------------------------
def register_join(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "join",
        help="put one agent into one LiveKit room",
        description="Join a LiveKit room directly (no dispatch) and talk with a participant.",
    )
    add_app_arguments(p)
    _add_server_arguments(p)
    _add_follow_arguments(p)
    p.add_argument("--room", required=True, help="room name")
    p.add_argument("--token", default=None, help="join token (default: minted from the API key)")
    p.add_argument("--identity", default="agent", help="the agent's participant identity")
    p.add_argument("--name", default="Agent", help="the agent's display name")
    p.add_argument(
        "--stay",
        action="store_true",
        help="when the participant leaves, wait for the next one instead of leaving",
    )
    p.set_defaults(run=join_command)


def join_command(args: argparse.Namespace) -> int:
    reason = run_loop(join_room(args))
    log.info("left the room: %s", reason)
    return 0


async def join_room(args: argparse.Namespace, *, room: rtc.Room | None = None) -> str:
    """Join, run the app's session until the call ends or SIGINT/SIGTERM; returns why it ended.

    ``room`` replaces the SDK room (tests pass one whose server side is simulated).
    """
    from duplex.agents.app import choose_backend, load_app

    from .auth import LiveKitCredentials
    from .room import RoomTransport

    spec = load_app(args.app)
    backend = choose_backend(args.backend)
    credentials = None
    if args.token is None or args.url is None:
        credentials = LiveKitCredentials.from_env(args.url, args.api_key, api_secret(args))
    caps = backend.capabilities
    transport = RoomTransport(
        room_name=args.room,
        url=args.url,
        token=args.token,
        credentials=credentials,
        identity=args.identity,
        name=args.name,
        participant_identity=args.participant,
        participant_kinds=args.kinds,
        input_rate=caps.input_sample_rate,
        output_rate=caps.output_sample_rate,
        close_on_participant_leave=not args.stay,
        room=room,
    )
    session = await spec.start(transport, backend)
    await _until_closed_or_signal(session)
    await session.aclose("agent left")
    return transport.close_reason or "closed"


async def _until_closed_or_signal(session: AgentSession) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        waiters = {asyncio.ensure_future(session.closed.wait()), asyncio.ensure_future(stop.wait())}
        _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
