"""``agent dev app.py``: the playground in the browser, talking to your agent."""

from __future__ import annotations

import argparse
import asyncio

from duplex.agents.app import choose_backend, default_backend_name, load_app
from duplex.agents.cli import Subparsers, add_app_arguments

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
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    spec = load_app(args.app)
    backend = choose_backend(args.backend)
    name = args.backend or default_backend_name()

    def ready(server: PlaygroundServer) -> None:
        print(f"duplex playground: {server.url}", flush=True)
        print(f"  app {spec.name} on backend {name}; Ctrl+C to stop", flush=True)

    asyncio.run(
        serve(spec, backend, host=args.host, port=args.port, backend_name=name, on_ready=ready)
    )
    return 0
