"""CLI regressions: port in use, agent constructor errors, one VAD default, ``dev --reload``."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from duplex.agents import EnergyVAD
from duplex.agents.app import load_app
from duplex.agents.cli import main
from duplex.agents.testing import MemoryTransport, ScriptedBackend

AGENT = Path(sys.executable).with_name("agent")

SIMPLE_APP = """
from duplex.agents import Agent


class Simple(Agent):
    instructions = "Be brief."
"""


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port some other program holds."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_dev_port_in_use_is_a_clean_error(
    tmp_path: Path, busy_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    app = tmp_path / "simple_app.py"
    app.write_text(SIMPLE_APP)
    code = main(["dev", str(app), "--backend", "scripted", "--port", str(busy_port)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"port {busy_port}" in err and "already in use" in err
    assert "Traceback" not in err


def test_run_port_in_use_is_a_clean_error(
    tmp_path: Path, busy_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("livekit.agents")
    app = tmp_path / "simple_app.py"
    app.write_text(SIMPLE_APP)
    code = main(
        [
            "run",
            str(app),
            "--backend",
            "scripted",
            "--url",
            "ws://127.0.0.1:9",
            "--api-key",
            "key",
            "--api-secret",
            "secret",
            "--dev",
            "--host",
            "127.0.0.1",
            "--port",
            str(busy_port),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert str(busy_port) in err and "address already in use" in err
    assert "--port" in err and "Traceback" not in err


NEEDS_ARGS_APP = """
from duplex.agents import Agent


class NeedsDb(Agent):
    instructions = "x"

    def __init__(self, db_url: str) -> None:
        super().__init__()
        self.db_url = db_url
"""


def test_agent_constructor_errors_show_at_start_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = tmp_path / "needs_args.py"
    app.write_text(NEEDS_ARGS_APP)
    # console --text would wait on stdin for a first line: the error must come before that
    assert main(["console", str(app), "--text", "--backend", "scripted"]) == 2
    err = capsys.readouterr().err
    assert "NeedsDb() failed: TypeError" in err and "db_url" in err
    assert "entrypoint(ctx)" in err


async def test_every_command_gets_the_same_vad(tmp_path: Path) -> None:
    """`AppSpec.start` (which dev, console, join and run all use) picks WebRTC's VAD."""
    pytest.importorskip("webrtcvad")
    from duplex.plugins.webrtcvad import WebRTCVAD

    app = tmp_path / "simple_app.py"
    app.write_text(SIMPLE_APP)
    spec = load_app(str(app))
    session = await spec.start(MemoryTransport(), ScriptedBackend())
    assert isinstance(session.vad, WebRTCVAD)
    await session.aclose()
    session = await spec.start(MemoryTransport(), ScriptedBackend(), vad=None)  # asked for none
    assert isinstance(session.vad, EnergyVAD)
    await session.aclose()


def _lines(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    q: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            q.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return q


def _wait_line(q: queue.Queue[str], needle: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        try:
            line = q.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        seen.append(line)
        if needle in line:
            return line
    raise AssertionError(f"no line with {needle!r} in {seen}")


def test_dev_reload_restarts_on_change(tmp_path: Path) -> None:
    pytest.importorskip("watchfiles")
    app = tmp_path / "reload_app.py"
    app.write_text(SIMPLE_APP)
    proc = subprocess.Popen(
        [str(AGENT), "dev", str(app), "--backend", "scripted", "--port", "0", "--reload"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )
    try:
        q = _lines(proc)
        _wait_line(q, "duplex playground: http://127.0.0.1:")
        app.write_text(SIMPLE_APP + "\n# edited\n")
        _wait_line(q, "restarting")
        _wait_line(q, "duplex playground: http://127.0.0.1:")  # served again by a new child
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
