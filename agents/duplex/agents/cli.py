"""The ``agent`` console script.

Subcommands come from the ``duplex.commands`` entry-point group: each entry point
is a ``register(subparsers)`` function that adds its parser and sets
``run=handler`` with ``handler(args) -> int | None``. The core names no plugin,
so a command whose extra is not installed still shows up and explains what to
install instead of failing with a traceback.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Any, TypeAlias

from .app import (
    COMMAND_GROUP,
    AppLoadError,
    PortInUseError,
    load_entry_point,
    missing_extra_error,
)
from .errors import DuplexError
from .logs import LOG_FORMATS, configure_logging, split_log_options
from .version import __version__

__all__ = [
    "Handler",
    "Subparsers",
    "add_app_arguments",
    "add_worker_arguments",
    "build_parser",
    "default_workers",
    "main",
]

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Handler: TypeAlias = Callable[[argparse.Namespace], "int | None"]

log = logging.getLogger("duplex.cli")


def add_app_arguments(parser: argparse.ArgumentParser, *, optional: bool = False) -> None:
    """The arguments every app-running command shares: the app and ``--backend``.

    ``optional`` suits commands that also do something without an app (listing devices).
    """
    parser.add_argument(
        "app",
        nargs="?" if optional else None,
        help="app file or module, optionally with :name (e.g. examples/assistant.py:Assistant)",
    )
    parser.add_argument(
        "--backend",
        default=None,
        help="backend name (duplex.backends entry points); default: openai if OPENAI_API_KEY "
        "is set, vllm if DUPLEX_VLLM_URL is set, otherwise offline",
    )


def default_workers() -> int:
    """One worker per core (what ``--workers`` defaults to)."""
    return max(1, os.cpu_count() or 1)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("at least 1")
    return value


def add_worker_arguments(
    parser: argparse.ArgumentParser, *, calls: str = "calls", default_note: str = ""
) -> None:
    """``--workers`` and ``--drain-timeout``, for servers that can use every core.

    ``--workers`` parses to None when not given: the command resolves it (`default_workers`).
    """
    parser.add_argument(
        "--workers",
        type=_positive,
        default=None,
        metavar="N",
        help=f"processes serving {calls} behind the one port (default: one per core, "
        f"here {default_workers()}{default_note}; 1: a single process, no supervisor). "
        "SIGTERM drains: no new calls, those in progress finish",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="with several workers: seconds SIGTERM waits for calls in progress (default 30)",
    )


def _unavailable(name: str, error: DuplexError) -> Handler:
    def run(args: argparse.Namespace) -> int:
        raise error

    return run


def _register_commands(subparsers: Subparsers) -> None:
    for ep in sorted(entry_points(group=COMMAND_GROUP), key=lambda e: e.name):
        try:
            register = load_entry_point(ep, what="command")
            register(subparsers)
        except DuplexError as e:
            # Keep the command visible; running it explains what is missing.
            stub = subparsers.add_parser(ep.name, help=f"(unavailable: {e})", add_help=False)
            stub.add_argument("rest", nargs=argparse.REMAINDER)
            stub.set_defaults(run=_unavailable(ep.name, e))
        except argparse.ArgumentError as e:
            log.warning("command %r from %s clashes with another one: %s", ep.name, ep.value, e)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent", description="Run duplex voice agents: playground, LiveKit worker, console."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    # Taken out of argv before parsing (see `split_log_options`), so they work anywhere on the
    # line; listed here for --help.
    parser.add_argument(
        "--log-level",
        metavar="LEVEL",
        help="debug|info|warning|error, optionally with per-logger levels (info,aioice=debug); "
        "anywhere on the line; default: $DUPLEX_LOG_LEVEL or info",
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="text or json (one object per line, with session_id); default: "
        "$DUPLEX_LOG_FORMAT or text",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _register_commands(subparsers)
    return parser


def _report(error: BaseException) -> None:
    print(f"agent: error: {error}", file=sys.stderr)
    cause = error.__cause__
    # The developer's own code failed to import: its traceback is what they need.
    if isinstance(error, AppLoadError) and cause is not None:
        traceback.print_exception(type(cause), cause, cause.__traceback__, file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        level, fmt, rest = split_log_options(sys.argv[1:] if argv is None else argv)
        configure_logging(level, fmt)
    except ValueError as e:
        print(f"agent: error: {e}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(rest)
    # For commands that re-run themselves (``dev --reload``): the line as given.
    args.log_level, args.log_format, args.argv = level, fmt, rest
    run: Handler | None = getattr(args, "run", None)
    if run is None:
        parser.print_help()
        return 2
    try:
        code: Any = run(args)
    except ModuleNotFoundError as e:
        _report(missing_extra_error(e, context=f"agent {args.command}"))
        return 2
    except DuplexError as e:
        _report(e)
        return 2
    except OSError as e:
        # Any server a command starts (playground, worker health or metrics endpoint).
        if e.errno != errno.EADDRINUSE and "address already in use" not in str(e).lower():
            raise
        _report(
            PortInUseError(
                f"{e.strerror or e}; stop the other server or pick another port "
                "(--port, --metrics-port; 0 picks a free one)"
            )
        )
        return 2
    except KeyboardInterrupt:
        return 130
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
