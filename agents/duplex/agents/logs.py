"""Logging for duplex processes: text or JSON lines, each record tagged with its call.

A session binds its id to a context variable when it starts; every task it spawns
inherits that context, so every record logged on the call's behalf (the session,
its backend connection, the transport, third-party libraries it drives) carries
``session_id`` without any logger having to pass it along. `configure_logging`
installs one handler that stamps the id and formats the line; the ``agent`` CLI
calls it with ``--log-level``/``--log-format`` or ``DUPLEX_LOG_LEVEL``/``DUPLEX_LOG_FORMAT``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar, Token
from datetime import datetime, timezone
from typing import IO, Any, Literal

__all__ = [
    "LOG_FORMATS",
    "LOG_LEVELS",
    "NOISY_LOGGERS",
    "JsonFormatter",
    "LogFormat",
    "SessionIdFilter",
    "bind_session_id",
    "configure_logging",
    "current_session_id",
    "new_session_id",
    "session_scope",
    "split_log_options",
]

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")

#: Libraries that log every ICE candidate, model load or HTTP request at INFO: a call
#: would drown in them. They stay at WARNING unless named in the level spec.
NOISY_LOGGERS = (
    "aioice",
    "aiortc",
    "faster_whisper",
    "ctranslate2",
    "piper",
    "httpx",
    "httpcore",
    "websockets",
    "urllib3",
    "livekit",
    "openai",
    "watchfiles",
)

_session_id: ContextVar[str | None] = ContextVar("duplex_session_id", default=None)


def new_session_id() -> str:
    """A short random id for a session that was given none."""
    return "sess_" + secrets.token_hex(6)


def current_session_id() -> str | None:
    """The id of the call the running code works for, if any."""
    return _session_id.get()


def bind_session_id(session_id: str | None) -> Token[str | None]:
    """Tag this context (and the tasks it spawns from now on) with ``session_id``."""
    return _session_id.set(session_id)


@contextlib.contextmanager
def session_scope(session_id: str | None) -> Iterator[None]:
    """``with session_scope(call_id): ...`` — records inside carry the id; restored after."""
    token = _session_id.set(session_id)
    try:
        yield
    finally:
        _session_id.reset(token)


class SessionIdFilter(logging.Filter):
    """Adds ``record.session_id`` (None outside a call); installed on the handler, so it
    sees third-party records too."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "session_id"):
            record.session_id = _session_id.get()
        return True


_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "session_id",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, session_id, extras, exc_info."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "session_id": getattr(record, "session_id", None),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value if isinstance(value, (str, int, float, bool)) else repr(value)
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False)


class _TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s%(sid)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        sid = getattr(record, "session_id", None)
        record.sid = f" [{sid}]" if sid else ""
        return super().format(record)


def _parse_levels(spec: str) -> tuple[int, dict[str, int]]:
    """``"info"`` or ``"info,aioice=debug"``: the root level plus per-logger overrides."""
    root = logging.INFO
    per_logger: dict[str, int] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, sep, level = part.rpartition("=")
        value = logging.getLevelName(level.strip().upper())
        if not isinstance(value, int):
            raise ValueError(f"unknown log level {level!r} (use one of {', '.join(LOG_LEVELS)})")
        if sep:
            per_logger[name.strip()] = value
        else:
            root = value
    return root, per_logger


def configure_logging(
    level: str | None = None,
    fmt: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    stream: IO[str] | None = None,
) -> None:
    """Install the process's log handler (replacing any earlier one).

    ``level`` is ``debug|info|warning|error``, optionally followed by per-logger
    overrides (``info,aioice=debug``); ``fmt`` is ``text`` or ``json``. Missing values
    come from ``DUPLEX_LOG_LEVEL``/``DUPLEX_LOG_FORMAT``, then info/text.
    """
    env = os.environ if environ is None else environ
    level = level or env.get("DUPLEX_LOG_LEVEL") or "info"
    fmt = (fmt or env.get("DUPLEX_LOG_FORMAT") or "text").lower()
    if fmt not in LOG_FORMATS:
        raise ValueError(f"unknown log format {fmt!r} (use text or json)")
    root_level, per_logger = _parse_levels(level)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(SessionIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else _TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(root_level)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root_level))
    for name, value in per_logger.items():
        logging.getLogger(name).setLevel(value)


def split_log_options(argv: Sequence[str]) -> tuple[str | None, str | None, list[str]]:
    """Take ``--log-level``/``--log-format`` out of ``argv`` wherever they are.

    They may come before or after the subcommand (``agent dev app.py --log-level debug``);
    everything after ``--`` is left alone. Returns (level, format, the rest).
    """
    level: str | None = None
    fmt: str | None = None
    rest: list[str] = []
    i = 0
    args = list(argv)
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        name, eq, value = arg.partition("=")
        if name in ("--log-level", "--log-format"):
            if not eq:
                if i + 1 >= len(args):
                    raise ValueError(f"{name} needs a value")
                value = args[i + 1]
                i += 1
            if name == "--log-level":
                level = value
            else:
                fmt = value
        else:
            rest.append(arg)
        i += 1
    return level, fmt, rest
