"""Logging: options anywhere on the line, JSON lines tagged with the call, quiet libraries."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest

from duplex.agents import Agent, AgentSession, ToolExecuted, function_tool
from duplex.agents.logs import configure_logging, split_log_options
from duplex.agents.testing import MemoryTransport, Reply, ScriptedBackend, ScriptedCall

app_log = logging.getLogger("tests.app")


class Lookup(Agent):
    instructions = "Look things up."

    @function_tool
    async def lookup(self, code: str) -> str:
        """Look up a code."""
        app_log.info("looking up %s", code)
        return f"{code} ok"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name in ("aioice", "faster_whisper"):
        logging.getLogger(name).setLevel(logging.NOTSET)


def test_log_options_are_taken_from_anywhere() -> None:
    argv = ["dev", "app.py", "--log-level", "debug", "--port", "1", "--log-format=json"]
    assert split_log_options(argv) == ("debug", "json", ["dev", "app.py", "--port", "1"])
    assert split_log_options(["--log-level=warning", "run", "--", "--log-level", "x"]) == (
        "warning",
        None,
        ["run", "--", "--log-level", "x"],
    )
    with pytest.raises(ValueError, match="needs a value"):
        split_log_options(["run", "--log-level"])


async def test_json_lines_carry_the_session_id(restore_logging: None) -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    backend = ScriptedBackend(
        [Reply(text="checking", calls=(ScriptedCall("lookup", {"code": "A1"}),)), Reply("done")]
    )
    session = AgentSession(agent=Lookup(), backend=backend)
    other = AgentSession(agent=Lookup(), backend=ScriptedBackend())
    assert session.id != other.id
    await session.start(MemoryTransport())
    executed = session.next_event(ToolExecuted)
    await session.send_text("check A1")
    await executed
    await session.aclose()
    app_log.info("outside any call")
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    lookup = [r for r in records if r["message"] == "looking up A1"]
    assert lookup and lookup[0]["session_id"] == session.id
    assert lookup[0]["level"] == "info" and lookup[0]["logger"] == "tests.app"
    assert "ts" in lookup[0]


def test_text_format_and_noisy_loggers(restore_logging: None) -> None:
    out = io.StringIO()
    configure_logging(None, None, environ={"DUPLEX_LOG_LEVEL": "debug"}, stream=out)
    logging.getLogger("aioice.ice").info("candidate pair")  # a library's chatter
    logging.getLogger("faster_whisper").info("Processing audio")
    logging.getLogger("aioice.ice").warning("ICE failed")
    logging.getLogger("duplex.test").debug("visible at debug")
    text = out.getvalue()
    assert "candidate pair" not in text and "Processing audio" not in text
    assert "ICE failed" in text and "visible at debug" in text
    out.truncate(0)
    configure_logging("info,aioice=debug", "text", stream=out)
    logging.getLogger("aioice.ice").debug("asked for")
    assert "asked for" in out.getvalue()
    with pytest.raises(ValueError, match="unknown log format"):
        configure_logging("info", "xml")
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("loud", "text")


def test_cli_accepts_log_options_after_the_command(tmp_path: object) -> None:
    """Through the real console script: JSON lines on stderr, from the environment too."""
    code = "import sys, logging; from duplex.agents.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    r = subprocess.run(
        [sys.executable, "-c", code, "console", "nope.py", "--log-format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"DUPLEX_LOG_LEVEL": "debug", "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 2
    assert "no such file: nope.py" in r.stderr
    r = subprocess.run(
        [sys.executable, "-c", code, "console", "x.py", "--log-format", "xml"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "unknown log format 'xml'" in r.stderr
