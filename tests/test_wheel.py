"""The built wheel, installed as a newcomer would, in clean venvs (``make wheel-check``).

- ``[webrtc,local]``: the quickstart's ``app.py`` under ``agent dev`` answers a WebRTC peer
  (typed and spoken turns, reply audio), and every package ships ``py.typed``;
- ``[console]`` alone: the console command loads;
- ``[webrtc]`` alone: ``agent dev`` says to install ``[local]``.

Heavy: it builds the wheel and downloads the extras into fresh venvs.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from tests.speech import concat, silence, speak

pytestmark = pytest.mark.heavy

ROOT = Path(__file__).resolve().parent.parent


def run(*cmd: str | Path, timeout: float = 900, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kw,  # type: ignore[call-overload]
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    built = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", out, ROOT)
    assert built.returncode == 0, built.stderr
    (found,) = out.glob("duplex_agents-*.whl")
    return found


def venv_with(path: Path, requirement: str) -> Path:
    """A fresh venv (no access to this one's packages) with ``requirement`` installed."""
    made = run(sys.executable, "-m", "venv", path)
    assert made.returncode == 0, made.stderr
    py = path / "bin" / "python"
    installed = run(py, "-m", "pip", "install", "-q", requirement)
    assert installed.returncode == 0, installed.stderr[-3000:]
    return path / "bin"


def quickstart_app(folder: Path) -> Path:
    """The quickstart's app.py, as a reader copies it from the page."""
    text = (ROOT / "docs" / "quickstart.md").read_text()
    code = next(
        b for b in re.findall(r"```python\n(.*?)```", text, re.S) if b.startswith("# app.py")
    )
    app = folder / "app.py"
    app.write_text(code)
    return app


@asynccontextmanager
async def agent_dev(bin_dir: Path, app: Path) -> AsyncIterator[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DUPLEX_"))}
    proc = await asyncio.create_subprocess_exec(
        str(bin_dir / "agent"), "dev", str(app), "--port", "0",
        cwd=app.parent, env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        url = None
        seen = []
        while url is None:
            line = (await asyncio.wait_for(proc.stdout.readline(), 180)).decode()
            assert line, f"agent dev exited: {''.join(seen)}"
            seen.append(line)
            if line.startswith("duplex playground: "):
                url = line.split(": ", 1)[1].strip()
        yield url
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)


async def test_quickstart_from_the_wheel_answers_a_peer(wheel: Path, tmp_path: Path) -> None:
    from tests.webrtc.peer import ClientPeer

    bin_dir = await asyncio.to_thread(venv_with, tmp_path / "venv", f"{wheel}[webrtc,local]")
    site = next((tmp_path / "venv" / "lib").glob("python3*/site-packages"))
    for package in ("agents", "backends/openai", "backends/cascade", "plugins/webrtc"):
        assert (site / "duplex" / package / "py.typed").is_file(), package
    app = quickstart_app(tmp_path)
    async with agent_dev(bin_dir, app) as url, aiohttp.ClientSession() as http:
        async with http.get(url + "health") as r:
            assert "Whisper tiny.en → echo → Piper" in (await r.json())["parts"]
        peer = ClientPeer()
        try:
            async with http.post(
                url + "offer", json={"type": "offer", "sdp": await peer.offer()}
            ) as r:
                assert r.status == 200, await r.text()
                await peer.answer((await r.json())["sdp"])
            peer.send({"type": "text", "text": "hello there"})
            reply = await peer.next_message("transcript", timeout=120)
            while reply.get("role") != "assistant" or not reply.get("final"):
                reply = await peer.next_message("transcript", timeout=120)
            assert reply["text"] == "You said: hello there."
            assert await peer.receive_burst(timeout=60)  # Piper's voice reached the peer
            question = concat(silence(0.3, 48000), speak("What time is it?", 48000))
            await peer.mic.write(concat(question, silence(1.5, 48000)))  # type: ignore[attr-defined]
            heard = await peer.next_message("transcript", timeout=120)
            while heard.get("role") != "user" or not heard.get("final"):
                heard = await peer.next_message("transcript", timeout=120)
            assert "time" in heard["text"].lower()  # Whisper from the wheel heard it
        finally:
            await peer.close()


def test_extras_work_alone(wheel: Path, tmp_path: Path) -> None:
    console = venv_with(tmp_path / "console", f"{wheel}[console]")
    loaded = run(console / "python", "-c", "import duplex.plugins.console")
    # PortAudio is a system library: without it the import explains itself, never "livekit".
    assert loaded.returncode == 0 or "PortAudio" in loaded.stderr, loaded.stderr
    assert "livekit" not in loaded.stderr
    helped = run(console / "agent", "console", "--help")
    assert helped.returncode == 0, helped.stderr

    webrtc = venv_with(tmp_path / "webrtc", f"{wheel}[webrtc]")
    app = quickstart_app(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DUPLEX_"))}
    dev = run(webrtc / "agent", "dev", app, "--port", "0", timeout=120, env=env)
    assert dev.returncode == 2, dev.stdout + dev.stderr
    assert "pip install 'duplex-agents[local]'" in dev.stderr
    assert "Traceback" not in dev.stderr
