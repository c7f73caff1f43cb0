"""`agent phone` and `agent sip` as a user runs them: a real process, a real port, Ctrl+C."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from duplex.agents.cli import main

from .baresip import free_udp_port
from .provider import TWILIO_ACCOUNT, TWILIO_TOKEN

AGENT = Path(sys.executable).with_name("agent")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "assistant.py"
SIPP = Path(__file__).parent / "sipp"


async def _start(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        str(AGENT),
        "--log-level",
        "warning",
        *args,
        str(EXAMPLE),
        "--backend",
        "scripted",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )


async def _stop(proc: asyncio.subprocess.Process) -> int:
    if proc.returncode is None:
        proc.send_signal(signal.SIGINT)
    return await asyncio.wait_for(proc.wait(), 20)


async def test_agent_phone_answers_signed_twilio_webhooks_until_interrupted() -> None:
    from twilio.request_validator import RequestValidator

    env = {"TWILIO_ACCOUNT_SID": TWILIO_ACCOUNT, "TWILIO_AUTH_TOKEN": TWILIO_TOKEN}
    proc = await _start("phone", "--provider", "twilio", "--port", "0", env=env)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        m = re.match(r"duplex phone \(twilio\): webhook (http://127\.0\.0\.1:\d+)/voice", line)
        assert m, line
        url = m.group(1) + "/voice"
        form = {"CallSid": "CA1", "AccountSid": TWILIO_ACCOUNT}
        good = RequestValidator(TWILIO_TOKEN).compute_signature(url, form)
        async with aiohttp.ClientSession() as http:
            async with http.post(url, data=form, headers={"X-Twilio-Signature": good}) as r:
                assert r.status == 200 and "<Connect><Stream" in await r.text()
            async with http.post(url, data=form, headers={"X-Twilio-Signature": "bad"}) as r:
                assert r.status == 403
    finally:
        assert await _stop(proc) == 0
    assert proc.stderr is not None
    assert TWILIO_TOKEN not in (await proc.stderr.read()).decode()  # secrets stay out of logs


def test_telnyx_needs_an_api_key(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.delenv("TELNYX_API_KEY", raising=False)
    code = main(["phone", str(EXAMPLE), "--backend", "scripted", "--provider", "telnyx"])
    assert code == 2
    assert "TELNYX_API_KEY" in capsys.readouterr().err


def test_sip_listen_address_is_checked(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sip", str(EXAMPLE), "--backend", "scripted", "--listen", "nowhere"])
    assert code == 2
    assert "HOST:PORT" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("sipp") is None, reason="needs sipp")
async def test_agent_sip_answers_calls_until_interrupted() -> None:
    pytest.importorskip("pjsua2")
    port = free_udp_port()
    proc = await _start("sip", "--listen", f"127.0.0.1:{port}")
    try:
        assert proc.stdout is not None
        line = ""
        while not line.startswith("duplex sip:"):  # PJSIP greets on stdout before its config
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            assert line, "agent sip exited"
        assert f"sip:agent@127.0.0.1:{port}" in line, line
        sipp = await asyncio.create_subprocess_exec(
            "sipp",
            f"127.0.0.1:{port}",
            "-sf",
            str(SIPP / "info_dtmf.xml"),
            "-m",
            "1",
            "-i",
            "127.0.0.1",
            "-p",
            str(free_udp_port()),
            "-timeout",
            "20",
            "-timeout_error",
            "-nostdin",
            "-nd",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(sipp.communicate(), 30)
        assert sipp.returncode == 0, out.decode(errors="replace")  # answered, DTMF, BYE
    finally:
        assert await _stop(proc) == 0
