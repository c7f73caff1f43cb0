"""``agent phone app.py --provider twilio|telnyx``: answer phone calls through a provider.

Credentials come from the environment so they never sit in shell history:
``TWILIO_ACCOUNT_SID`` + ``TWILIO_AUTH_TOKEN`` (the token also checks webhook
signatures), or ``TELNYX_API_KEY`` (+ ``TELNYX_PUBLIC_KEY`` for signatures).
``DUPLEX_STREAM_KEY`` sets the key of the per-call stream tokens (random per
process otherwise), for several processes behind one address. ``--workers N`` runs N
processes on one port (the kernel spreads connections over them); they share one
random key, since a call's webhook and its stream may reach different workers.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from duplex.agents.app import AppSpec, choose_backend, default_backend_name, load_app
from duplex.agents.backend import Backend
from duplex.agents.cli import (
    Subparsers,
    add_app_arguments,
    add_worker_arguments,
    default_workers,
)
from duplex.agents.errors import ConfigurationError
from duplex.agents.loop import run as run_loop
from duplex.agents.serving import serve_until_stopped
from duplex.agents.transport import Transport

from .control import CallControl, TelnyxCallControl, TwilioCallControl
from .server import ClosableSession, PhoneServer

if TYPE_CHECKING:
    from duplex.agents.workers import Supervisor, Worker

__all__ = [
    "PhoneOptions",
    "build_server",
    "phone_session_options",
    "register",
    "serve",
    "serve_worker",
]

log = logging.getLogger(__name__)


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "phone",
        help="answer phone calls through Twilio or Telnyx media streams",
        description="Serve the provider's voice webhook (POST /voice) and media WebSocket "
        "(/media); each call runs one session of APP.",
    )
    add_app_arguments(parser)
    parser.add_argument("--provider", choices=["twilio", "telnyx"], default="twilio")
    parser.add_argument("--host", default="127.0.0.1", help="interface (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (default: 8765; 0: any)")
    parser.add_argument(
        "--public-url",
        default=None,
        help="https://... where the provider reaches this server (a tunnel or proxy); "
        "signatures are checked against it",
    )
    parser.add_argument(
        "--api-base-url", default=None, help="the provider's REST API (default: its public one)"
    )
    parser.add_argument(
        "--max-calls", type=int, default=32, help="calls at once per worker (default: 32)"
    )
    add_worker_arguments(parser)
    parser.set_defaults(run=run)


def make_control(
    provider: str, env: Mapping[str, str], base_url: str | None = None
) -> CallControl | None:
    """The provider's call control from the environment; None when no credentials are set."""
    if provider == "twilio":
        sid, token = env.get("TWILIO_ACCOUNT_SID"), env.get("TWILIO_AUTH_TOKEN")
        if not (sid and token):
            return None
        if base_url:
            return TwilioCallControl(sid, token, base_url=base_url)
        return TwilioCallControl(sid, token)
    key = env.get("TELNYX_API_KEY")
    if not key:
        return None
    return TelnyxCallControl(key, base_url=base_url) if base_url else TelnyxCallControl(key)


def default_vad() -> Any | None:
    """WebRTC's VAD when its extra is installed (it runs at 8 kHz); else the session's default."""
    try:
        from duplex.plugins.webrtcvad import WebRTCVAD
    except ImportError:
        return None
    return WebRTCVAD()


def phone_session_options(
    spec: AppSpec, backend: Backend, session_options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A phone call's session options: `AppSpec.command_defaults` with the 8 kHz VAD.

    As `agent dev` does, the command's sessions get the end-of-turn model where it is
    installed (Smart Turn, plus the text score for a Whisper cascade), so a caller on
    the phone is answered as soon as the sentence is finished rather than after a
    fixed silence. An app's own VAD or turn options win.
    """
    return spec.command_defaults(backend, session_options or {}, vad=default_vad)


TransportT = TypeVar("TransportT", bound=Transport)


def app_factory(
    spec: AppSpec, backend: Backend, **session_options: Any
) -> Callable[[TransportT], Awaitable[ClosableSession]]:
    """Runs ``spec`` on ``backend`` for each call (a media stream or a SIP call)."""

    async def start(transport: TransportT) -> ClosableSession:
        return await spec.start(transport, backend, **session_options)

    return start


def build_server(
    spec: AppSpec,
    backend: Backend,
    *,
    provider: str,
    env: Mapping[str, str] | None = None,
    api_base_url: str | None = None,
    session_options: Mapping[str, Any] | None = None,
    **server_options: Any,
) -> PhoneServer:
    env = os.environ if env is None else env
    control = make_control(provider, env, api_base_url)
    if control is None:
        log.warning("no %s API credentials: the agent cannot hang up or transfer", provider)
    options = phone_session_options(spec, backend, session_options)
    if provider == "telnyx" and control is None:
        raise ConfigurationError("Telnyx calls are answered through its API: set TELNYX_API_KEY")
    return PhoneServer(
        app_factory(spec, backend, **options),
        provider=provider,
        control=control,
        twilio_auth_token=env.get("TWILIO_AUTH_TOKEN") if provider == "twilio" else None,
        telnyx_public_key=env.get("TELNYX_PUBLIC_KEY") if provider == "telnyx" else None,
        # Processes behind one load balancer must share it (webhook on one, stream on another).
        stream_key=env["DUPLEX_STREAM_KEY"].encode() if env.get("DUPLEX_STREAM_KEY") else None,
        **server_options,
    )


async def serve(
    server: PhoneServer,
    backend: Backend,
    *,
    on_ready: Callable[[PhoneServer], None] | None = None,
    stop: asyncio.Event | None = None,
    drain_timeout: float | None = None,
) -> None:
    """Serve until ``stop`` (or SIGINT/SIGTERM), then end every stream cleanly.

    With ``drain_timeout`` (a worker among several), SIGTERM first drains: no new
    calls, those in progress finish (for up to that many seconds).
    """
    await serve_until_stopped(
        server, backend, on_ready=on_ready, stop=stop, drain_timeout=drain_timeout
    )


@dataclass(frozen=True)
class PhoneOptions:
    """What a worker needs to rebuild the phone server in its own process (picklable)."""

    app: str
    backend: str | None
    provider: str
    host: str
    public_url: str | None
    api_base_url: str | None
    max_calls: int
    #: Shared by every worker: a webhook and its stream may reach different ones.
    stream_key: str
    log_level: str | None = None
    log_format: str | None = None
    drain_timeout: float = 30.0


def serve_worker(options: PhoneOptions, worker: Worker) -> None:
    """The body of one worker process (the supervisor starts it with ``spawn``)."""
    from duplex.agents.logs import configure_logging

    configure_logging(options.log_level, options.log_format)
    spec = load_app(options.app)
    backend = choose_backend(options.backend)
    pid = os.getpid()
    server = build_server(
        spec,
        backend,
        provider=options.provider,
        env={**os.environ, "DUPLEX_STREAM_KEY": options.stream_key},
        api_base_url=options.api_base_url,
        host=options.host,
        port=worker.port,
        public_url=options.public_url,
        max_calls=options.max_calls,
        reuse_port=True,
        on_load=worker.report_load,
        status=lambda: {"worker": worker.index, "pid": pid, "workers": worker.table()},
    )
    run_loop(
        serve(
            server,
            backend,
            on_ready=lambda _s: worker.report_serving(),
            drain_timeout=options.drain_timeout,
        )
    )


def _run_workers(args: argparse.Namespace, server: PhoneServer, ready: Any) -> int:
    """``--workers N``: a supervisor here, the phone server in N processes on one port."""
    from duplex.agents.workers import run_workers

    options = PhoneOptions(
        app=args.app,
        backend=args.backend,
        provider=args.provider,
        host=args.host,
        public_url=args.public_url,
        api_base_url=args.api_base_url,
        max_calls=args.max_calls,
        stream_key=os.environ.get("DUPLEX_STREAM_KEY") or secrets.token_hex(32),
        log_level=args.log_level,
        log_format=args.log_format,
        drain_timeout=args.drain_timeout,
    )

    def on_ready(sup: Supervisor) -> None:
        server.port = sup.port
        ready(server)
        pids = ", ".join(map(str, sup.pids))
        print(f"  {sup.count} workers (pids {pids})", flush=True)

    return run_workers(
        functools.partial(serve_worker, options),
        count=args.workers,
        host=args.host,
        port=args.port,
        drain_timeout=args.drain_timeout,
        on_ready=on_ready,
    )


def run(args: argparse.Namespace) -> int:
    spec = load_app(args.app)
    backend = choose_backend(args.backend)
    name = args.backend or default_backend_name()
    # Built here in either case: its checks (credentials, provider) fail fast, once.
    server = build_server(
        spec,
        backend,
        provider=args.provider,
        api_base_url=args.api_base_url,
        host=args.host,
        port=args.port,
        public_url=args.public_url,
        max_calls=args.max_calls,
    )

    def ready(s: PhoneServer) -> None:
        base = s.public_url or s.url
        print(f"duplex phone ({s.provider}): webhook {base}/voice, stream {base}/media", flush=True)
        print(f"  app {spec.name} on backend {name}; Ctrl+C to stop", flush=True)
        if not s.secured:
            print("  webhook signatures are NOT checked (no secret configured)", flush=True)

    if (args.workers or default_workers()) > 1:
        args.workers = args.workers or default_workers()
        return _run_workers(args, server, ready)
    run_loop(serve(server, backend, on_ready=ready))
    return 0
