"""``agent dev app.py``: the playground in the browser, talking to your agent."""

from __future__ import annotations

import argparse
import asyncio
from urllib.parse import quote

from duplex.agents.app import choose_backend, default_backend_name, load_app
from duplex.agents.cli import Subparsers, add_app_arguments

from .guard import TOKEN_ENV, token_from_env
from .playground import serve
from .server import PlaygroundServer

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
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    spec = load_app(args.app)
    backend = choose_backend(args.backend)
    name = args.backend or default_backend_name()

    token = args.token or token_from_env()

    def ready(server: PlaygroundServer) -> None:
        # The token is shown to the one who started the server (it is theirs), never logged.
        url = server.url + (f"?token={quote(token, safe='')}" if token else "")
        print(f"duplex playground: {url}", flush=True)
        print(f"  app {spec.name} on backend {name}; Ctrl+C to stop", flush=True)

    options = {
        "token": token,
        "allowed_hosts": tuple(args.allow_host),
        "allowed_origins": tuple(args.allow_origin),
    }
    asyncio.run(
        serve(
            spec,
            backend,
            host=args.host,
            port=args.port,
            backend_name=name,
            on_ready=ready,
            server_options=options,
        )
    )
    return 0
