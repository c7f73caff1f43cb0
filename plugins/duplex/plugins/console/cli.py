"""``agent console app.py``: the agent on this machine's microphone and speaker, or typed."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from duplex.agents.cli import Subparsers, add_app_arguments
from duplex.agents.loop import run as run_loop


def register(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "console",
        help="talk to your agent with this machine's microphone and speaker",
        description="Run the app locally: speak (with echo cancellation) or type with --text.",
    )
    add_app_arguments(p, optional=True)  # listing devices needs no app
    p.add_argument("--list-devices", action="store_true", help="list sound devices and exit")
    p.add_argument("--input-device", default=None, help="microphone: index or part of its name")
    p.add_argument("--output-device", default=None, help="speaker: index or part of its name")
    p.add_argument("--sample-rate", type=int, default=48000, help="device rate (default 48000)")
    p.add_argument("--text", action="store_true", help="type instead of speaking; no audio")
    p.add_argument(
        "--no-echo-cancellation",
        action="store_true",
        help="turn echo cancellation off (e.g. with headphones)",
    )
    p.set_defaults(run=console_command, app=None)


def console_command(args: argparse.Namespace) -> int:
    from duplex.agents.errors import ConfigurationError

    from .devices import list_devices

    if args.list_devices:
        devices = list_devices()
        if not devices:
            print("no sound devices found")
        for d in devices:
            print(d.describe())
        print("(< default input, > default output)")
        return 0
    if not args.app:
        raise ConfigurationError("which app? e.g. agent console examples/assistant.py")
    run_loop(run_console(args))
    return 0


async def run_console(args: argparse.Namespace) -> str:
    from duplex.agents.app import choose_backend, load_app

    from .transport import ConsoleTransport

    spec = load_app(args.app)
    backend = choose_backend(args.backend)
    transport = ConsoleTransport(
        input_device=args.input_device,
        output_device=args.output_device,
        sample_rate=args.sample_rate,
        echo_cancellation=not args.no_echo_cancellation,
        text_only=args.text,
    )
    session = await spec.start(transport, backend)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    waiters = {asyncio.ensure_future(session.closed.wait()), asyncio.ensure_future(stop.wait())}
    _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await session.aclose("console closed")
    return "closed"
