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


async def test_agent_dev_with_a_token_from_the_environment() -> None:
    import os

    env = {**os.environ, "DUPLEX_TOKEN": "env-t0ken"}
    proc = await asyncio.create_subprocess_exec(
        str(AGENT), "--log-level", "warning", "dev", str(EXAMPLE), "--backend", "scripted",
        "--port", "0",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        m = re.match(
            r"duplex playground: (http://127\.0\.0\.1:\d+/)\?token=env-t0ken$", line.strip()
        )
        assert m, line
        async with aiohttp.ClientSession() as http:
            async with http.post(m.group(1) + "offer", json={"type": "offer", "sdp": "v=0"}) as r:
                assert r.status == 401
            auth = {"Authorization": "Bearer env-t0ken"}
            async with http.post(
                m.group(1) + "offer", json={"type": "offer", "sdp": "v=0"}, headers=auth
            ) as r:
                assert r.status == 400  # past the token: the SDP itself is refused
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    stderr = (await proc.stderr.read()).decode() if proc.stderr else ""
    assert "env-t0ken" not in stderr


def test_agent_dev_refuses_to_serve_other_machines_without_a_token(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DUPLEX_TOKEN", raising=False)
    code = main(["dev", str(EXAMPLE), "--backend", "scripted", "--host", "0.0.0.0", "--port", "0"])
    assert code == 2
    assert "token" in capsys.readouterr().err
