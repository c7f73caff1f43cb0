"""``agent dev app.py``: the playground in the browser, talking to your agent."""

from __future__ import annotations

import argparse
import functools
from urllib.parse import quote

from duplex.agents.app import AppSpec, choose_backend, default_backend_name, load_app
from duplex.agents.cli import Subparsers, add_app_arguments, add_worker_arguments, default_workers
from duplex.agents.loop import run as run_loop
from duplex.agents.telemetry_env import telemetry_wanted

from .guard import TOKEN_ENV, token_from_env
from .playground import serve
from .server import ClosableSession, PlaygroundServer

__all__ = ["register"]


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "dev",
        help="talk to your agent in the browser playground",
        description="Serve the playground page and run one session of APP per browser peer. "
        "Open the printed URL, press Connect and speak.",
    )
    add_app_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="interface (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default: 8080; 0: any free)")
    parser.add_argument(
        "--token",
        default=None,
        help=f"require this token to start a call (default: ${TOKEN_ENV}; prefer the variable: "
        "arguments show in `ps`). Needed when --host is not a loopback address; open the "
        "page as /?token=...",
    )
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also accept requests for this Host name (repeatable; loopback names always work)",
    )
    parser.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="also accept offers from pages of this origin, e.g. https://app.example (repeatable)",
    )
    parser.add_argument(
        "--reload",
        action="store_true",
        help="restart when a .py file under the app's folder changes (needs watchfiles)",
    )
    parser.add_argument(
        "--record",
        metavar="DIR",
        default=None,
        help="save every call to DIR: <call id>.json (the conversation) and .wav "
        "(left: caller, right: agent as heard)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics on this port (0: any free; needs the otel extra; "
        "with several workers, worker i uses PORT+i); traces go to OTLP when "
        "OTEL_EXPORTER_OTLP_ENDPOINT is set",
    )
    add_worker_arguments(parser, default_note="; one with --metrics-port, one scrape target")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.reload:
        return _run_reloading(args)
    spec = load_app(args.app)
    backend = choose_backend(args.backend)
    name = args.backend or default_backend_name()

    token = args.token or token_from_env()
    if args.workers is None:
        args.workers = 1 if args.metrics_port is not None else default_workers()
    if args.workers > 1:
        return _run_workers(args, spec, name, token)

    hooks = []
    metrics_url = None
    if args.metrics_port is not None or telemetry_wanted():
        from duplex.agents.telemetry import SessionTelemetry, setup_telemetry

        setup = setup_telemetry(metrics_port=args.metrics_port, metrics_host=args.host)
        metrics_url = setup.metrics_url
        hooks.append(SessionTelemetry(backend_name=name).prepare)

    def ready(server: PlaygroundServer) -> None:
        # The token is shown to the one who started the server (it is theirs), never logged.
        url = server.url + (f"?token={quote(token, safe='')}" if token else "")
        print(f"duplex playground: {url}", flush=True)
        print(f"  app {spec.name} on backend {name}; Ctrl+C to stop", flush=True)
        if metrics_url:
            print(f"  metrics: {metrics_url}", flush=True)

    options = {
        "token": token,
        "allowed_hosts": tuple(args.allow_host),
        "allowed_origins": tuple(args.allow_origin),
    }
    run_loop(
        serve(
            spec,
            backend,
            host=args.host,
            port=args.port,
            backend_name=name,
            record_dir=args.record,
            prepare=hooks,
            on_ready=ready,
            server_options=options,
        )
    )
    return 0


def _run_workers(args: argparse.Namespace, spec: AppSpec, name: str, token: str | None) -> int:
    """``--workers N``: a supervisor here, the playground in N processes on one port."""
    from duplex.agents.workers import Supervisor, run_workers

    from .dev_workers import DevOptions, serve_worker

    options = DevOptions(
        app=args.app,
        backend=args.backend,
        host=args.host,
        token=token,
        allowed_hosts=tuple(args.allow_host),
        allowed_origins=tuple(args.allow_origin),
        record=args.record,
        metrics_port=args.metrics_port,
        telemetry=telemetry_wanted(),
        log_level=args.log_level,
        log_format=args.log_format,
        drain_timeout=args.drain_timeout,
    )
    # The checks a worker would fail on (a token for other machines), here and once.
    PlaygroundServer(
        _no_factory,
        host=args.host,
        token=token,
        allowed_hosts=options.allowed_hosts,
        allowed_origins=options.allowed_origins,
    )

    def ready(sup: Supervisor) -> None:
        url = f"http://{args.host}:{sup.port}/" + (
            f"?token={quote(token, safe='')}" if token else ""
        )
        print(f"duplex playground: {url}", flush=True)
        print(
            f"  app {spec.name} on backend {name}; {sup.count} workers "
            f"(pids {', '.join(map(str, sup.pids))}); Ctrl+C to stop",
            flush=True,
        )

    return run_workers(
        functools.partial(serve_worker, options),
        count=args.workers,
        host=args.host,
        port=args.port,
        drain_timeout=args.drain_timeout,
        on_ready=ready,
    )


async def _no_factory(transport: object) -> ClosableSession:
    raise RuntimeError("the supervisor runs no calls")


def _run_reloading(args: argparse.Namespace) -> int:
    """Serve from a child process that watchfiles restarts on every change of the app's code.

    The child is the same command without ``--reload``; the app is checked here first so a
    broken app fails fast instead of restarting in a loop.
    """
    import shlex
    import sys
    from pathlib import Path

    try:
        import watchfiles
    except ModuleNotFoundError as e:
        from duplex.agents.app import missing_extra_error

        raise missing_extra_error(e, context="agent dev --reload") from e
    load_app(args.app)
    app_path = Path(args.app.rpartition(":")[0] if ":" in args.app else args.app)
    root = app_path.parent if app_path.suffix == ".py" else Path.cwd()
    argv = [a for a in args.argv if a != "--reload"]
    if args.log_level:
        argv += ["--log-level", args.log_level]
    if args.log_format:
        argv += ["--log-format", args.log_format]
    command = shlex.join([sys.executable, "-m", "duplex.agents.cli", *argv])
    print(f"duplex: watching {root.resolve()} for changes", flush=True)
    watchfiles.run_process(
        root,
        target=command,
        target_type="command",
        watch_filter=watchfiles.PythonFilter(),
        callback=lambda changes: print(f"duplex: {len(changes)} change(s), restarting", flush=True),
        sigint_timeout=5,
        sigkill_timeout=5,
    )
    return 0
