"""`agent run`/`agent join` secrets (env or file, never only argv) and the health server's bind."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from duplex.agents.cli import build_parser
from duplex.agents.errors import ConfigurationError
from duplex.plugins.livekit.cli import api_secret

from .fake_server import FakeLiveKitServer
from .sim import API_KEY, API_SECRET

APP = """
from duplex.agents import Agent


class Receptionist(Agent):
    instructions = "Answer the phone."
"""


def parse(*argv: str):
    return build_parser().parse_args(["run", "app.py", *argv])


def test_the_secret_comes_from_a_flag_a_file_or_the_environment(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-file\n")
    assert api_secret(parse("--api-secret-file", str(secret_file)), env={}) == "from-file"
    assert api_secret(parse(), env={"LIVEKIT_API_SECRET_FILE": str(secret_file)}) == "from-file"
    # The plain variable wins over the file variable; None means "use the environment".
    assert (
        api_secret(parse(), env={"LIVEKIT_API_SECRET": "x", "LIVEKIT_API_SECRET_FILE": "/n"})
        is None
    )
    assert api_secret(parse("--api-secret", "flag"), env={}) == "flag"
    with pytest.raises(ConfigurationError, match="cannot read"):
        api_secret(parse("--api-secret-file", str(tmp_path / "missing")), env={})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigurationError, match="empty"):
        api_secret(parse("--api-secret-file", str(tmp_path / "empty")), env={})


def test_health_server_defaults_to_loopback() -> None:
    assert parse().host == "127.0.0.1"


async def test_agent_run_binds_loopback_and_keeps_the_secret_out_of_argv(tmp_path: Path) -> None:
    app = tmp_path / "reception_app.py"
    app.write_text(textwrap.dedent(APP))
    secret_file = tmp_path / "lk-secret"
    secret_file.write_text(API_SECRET)
    lk = FakeLiveKitServer()
    await lk.start()
    agent_cli = os.path.join(os.path.dirname(sys.executable), "agent")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    proc = await asyncio.create_subprocess_exec(
        agent_cli, "run", str(app), "--backend", "scripted", "--url", lk.url,
        "--api-key", API_KEY, "--api-secret-file", str(secret_file), "--dev", "--port", "0",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        await lk.wait_for(lambda: lk.messages("register"), 30)  # the secret from the file worked
        worker = psutil.Process(proc.pid)
        assert all(API_SECRET not in part for part in worker.cmdline())
        listening: list[str] = []
        for _ in range(100):  # the health server starts beside the registration
            listening = [
                c.laddr.ip
                for c in worker.net_connections(kind="inet")
                if c.status == psutil.CONN_LISTEN
            ]
            if listening:
                break
            await asyncio.sleep(0.1)
        assert listening and all(ip == "127.0.0.1" for ip in listening), listening
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, out.decode()
        assert API_SECRET not in out.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await lk.stop()
