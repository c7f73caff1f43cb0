"""`agent dev` as a user runs it: a real process, a real port, Ctrl+C to stop."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import pytest

from duplex.agents.cli import main
from tests.webrtc.conftest import EXAMPLE

AGENT = Path(sys.executable).with_name("agent")


async def test_agent_dev_serves_the_playground_until_interrupted() -> None:
    proc = await asyncio.create_subprocess_exec(
        str(AGENT),
        "--log-level",
        "warning",
        "dev",
        str(EXAMPLE),
        "--backend",
        "scripted",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        m = re.match(r"duplex playground: (http://127\.0\.0\.1:\d+/)", line)
        assert m, line
        url = m.group(1)
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "health") as r:
                health = await r.json()
            async with http.get(url) as r:
                assert r.status == 200 and "duplex playground" in await r.text()
        assert health["status"] == "ok" and health["app"].endswith("assistant.py:Assistant")
        assert health["backend"] == "scripted"
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    stderr = (await proc.stderr.read()).decode() if proc.stderr else ""
    assert "Traceback" not in stderr


def test_agent_dev_on_a_busy_port(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["dev", str(EXAMPLE), "--backend", "scripted", "--port", str(port)])
    assert code == 2
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is already in use" in err and "--port" in err
