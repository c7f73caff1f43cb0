"""``agent sip app.py --listen 127.0.0.1:5060 [--register user@pbx]``: answer SIP calls directly.

The registration password comes from ``DUPLEX_SIP_PASSWORD`` so it stays out of
shell history and process lists.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal

from duplex.agents.app import choose_backend, default_backend_name, load_app
from duplex.agents.cli import Subparsers, add_app_arguments
from duplex.agents.errors import ConfigurationError

__all__ = ["parse_listen", "register"]


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "sip",
        help="answer SIP calls directly (no SIP bridge needed)",
        description="Listen for SIP INVITEs on UDP and run one session of APP per call. "
        "Needs the `sip` extra (pjsua2). Always one process (no --workers): a SIP dialog's "
        "requests and its RTP must all reach the process that answered it, which "
        "SO_REUSEPORT on UDP cannot promise; run several on different ports instead.",
    )
    add_app_arguments(parser)
    parser.add_argument(
        "--listen", default="127.0.0.1:5060", help="UDP address (default: 127.0.0.1:5060)"
    )
    parser.add_argument(
        "--register",
        default=None,
        metavar="USER@PBX",
        help="register with a PBX or trunk (password from DUPLEX_SIP_PASSWORD)",
    )
    parser.add_argument("--registrar", default=None, help="registrar URI (default: sip:PBX)")
    parser.add_argument(
        "--max-calls",
        type=int,
        default=4,
        help="calls at once (default: 4, the most the pjsua2-python build holds)",
    )
    parser.set_defaults(run=run)


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigurationError(f"--listen wants HOST:PORT, got {text!r}")
    return host, int(port)


def run(args: argparse.Namespace) -> int:
    from .cli import app_factory, phone_session_options
    from .sip_endpoint import Registration
    from .sip_server import SipServer

    host, port = parse_listen(args.listen)
    registration = None
    if args.register:
        registration = Registration.parse(args.register, os.environ.get("DUPLEX_SIP_PASSWORD"))
        if args.registrar:
            registration = Registration(
                registration.user, registration.domain, registration.password, args.registrar
            )
    spec = load_app(args.app)
    backend = choose_backend(args.backend)
    name = args.backend or default_backend_name()
    options = phone_session_options(spec, backend)

    async def main() -> None:
        server = SipServer(
            app_factory(spec, backend, **options),
            host=host,
            port=port,
            register=registration,
            max_calls=args.max_calls,
        )
        await backend.prewarm()
        await server.start()
        print(f"duplex sip: calls to {server.uri} reach {spec.name} on {name}", flush=True)
        if registration is not None:
            print(f"  registering as {registration.user}@{registration.domain}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await server.aclose()
            await backend.aclose()

    asyncio.run(main())
    return 0
