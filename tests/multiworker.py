"""Running a server command with ``--workers 2`` as a user does, for the smoke tests.

The command is the real ``agent`` console script in its own process; its backend is
the OpenAI Realtime test server (tests/openai/server.py) in the test's process, so
both workers' sessions talk to one server that speaks the protocol as the service
does and records what each client sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.openai.server import API_KEY, RealtimeTestServer, Reply

ROOT = Path(__file__).resolve().parents[1]
AGENT = Path(sys.executable).with_name("agent")
EXAMPLE = ROOT / "examples" / "assistant.py"
#: Every reply the workers' sessions get: a tone this long, paused after HOLD_MS.
REPLY_MS = 1500
HOLD_MS = 400


@dataclass
class Agent:
    """A running ``agent`` command: its URL (from the first line) and its workers' pids."""

    proc: asyncio.subprocess.Process
    url: str
    pids: list[int]
    stderr: list[str] = field(default_factory=list)

    async def health(self) -> dict[str, Any]:
        """``/health`` from whichever worker the kernel picks (a new connection each time)."""
        connector = aiohttp.TCPConnector(force_close=True)
        async with (
            aiohttp.ClientSession(connector=connector) as http,
            http.get(self.url.rstrip("/") + "/health") as r,
        ):
            assert r.status == 200
            body: dict[str, Any] = await r.json()
            return body

    async def calls_per_worker(self) -> dict[int, int]:
        """pid -> calls in progress, as the workers report them."""
        return {w["pid"]: w["calls"] for w in (await self.health())["workers"]}

    async def has_calls(self, count: int) -> bool:
        return sum((await self.calls_per_worker()).values()) == count


def held_replies(server: RealtimeTestServer) -> asyncio.Event:
    """Every reply holds after HOLD_MS until the returned event is set."""
    release = asyncio.Event()
    server.default_reply = lambda: Reply(audio_ms=REPLY_MS, hold_after_ms=HOLD_MS, release=release)
    return release


def loopback_only(tmp: Path) -> dict[str, str]:
    """Environment that keeps the command's WebRTC (ICE) on 127.0.0.1, as in-process tests do."""
    (tmp / "sitecustomize.py").write_text(
        f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n"
        "from tests.webrtc import loopback\nloopback.install()\n"
    )
    return {"PYTHONPATH": os.pathsep.join([str(tmp), os.environ.get("PYTHONPATH", "")])}


@contextlib.asynccontextmanager
async def agent(
    *args: str, server: RealtimeTestServer, env: dict[str, str] | None = None
) -> AsyncIterator[Agent]:
    """``agent <args> --workers 2`` on the openai backend pointed at ``server``."""
    full_env = {
        **os.environ,
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_API_KEY": API_KEY,
        **(env or {}),
    }
    proc = await asyncio.create_subprocess_exec(
        str(AGENT), "--log-level", "info", args[0], str(EXAMPLE), "--backend", "openai",
        "--port", "0", "--workers", "2", *args[1:],
        env=full_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    stderr: list[str] = []
    drain = asyncio.ensure_future(_collect(proc.stderr, stderr))
    try:
        lines = [(await asyncio.wait_for(proc.stdout.readline(), 60)).decode()]
        while "workers (pids" not in lines[-1]:
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            assert line, "".join(lines + stderr)
            lines.append(line)
        url = re.search(r"(http://127\.0\.0\.1:\d+)", lines[0])
        pids = re.search(r"workers \(pids ([\d, ]+)\)", lines[-1])
        assert url and pids, lines
        yield Agent(proc, url.group(1), [int(p) for p in pids.group(1).split(",")], stderr)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        await drain


async def _collect(stream: asyncio.StreamReader, into: list[str]) -> None:
    async for line in stream:
        into.append(line.decode(errors="replace"))


async def until(predicate: Callable[[], Any], timeout: float = 20.0) -> None:
    """Poll an async or plain predicate until it holds (the state lives in other processes)."""

    async def wait() -> None:
        while True:
            value = predicate()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return
            await asyncio.sleep(0.05)

    await asyncio.wait_for(wait(), timeout)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
