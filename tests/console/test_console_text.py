"""Text mode: typed lines reach the agent and its answers are printed; no sound device used."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

from duplex.agents import Agent, AgentSession, Message
from duplex.agents.events import AgentTranscribed, UserTranscribed
from duplex.agents.testing import Reply, ScriptedBackend
from duplex.plugins.console import ConsoleTransport


async def _typed(*lines: str, gate: asyncio.Event) -> AsyncIterator[str]:
    for line in lines:
        yield line + "\n"
    await gate.wait()  # the keyboard stays open until the test closes it


async def test_typed_question_gets_a_printed_answer() -> None:
    backend = ScriptedBackend([Reply(text="It is sunny.", audio_ms=200)])
    out = io.StringIO()
    eof = asyncio.Event()
    transport = ConsoleTransport(
        text_only=True, lines=_typed("", "what is the weather?", gate=eof), out=out
    )
    session = AgentSession(agent=Agent(), backend=backend)
    answered = asyncio.ensure_future(
        session.wait_for(AgentTranscribed, lambda e: e.final, timeout=5)
    )
    await session.start(transport)
    await backend.session.wait_for_call("create_response", timeout=5)
    await backend.session.handles[0].done
    user = [m for m in session.conversation if isinstance(m, Message) and m.role == "user"]
    assert [m.text for m in user] == ["what is the weather?"]  # the blank line was skipped
    await answered
    assert "agent: It is sunny." in out.getvalue()
    transport.publish(UserTranscribed("x", "spoken words", True))
    assert ("agent", "It is sunny.") in transport.transcript
    assert "you: spoken words" in out.getvalue()
    assert transport.device is None  # no sound device was opened
    eof.set()  # end of typing ends the text chat
    await asyncio.wait_for(session.closed.wait(), 5)


APP = """
from duplex.agents import Agent
from duplex.agents.testing import Reply


async def entrypoint(ctx):
    ctx.backend.replies.append(Reply(text="Hello from the console.", audio_ms=100))
    await ctx.start(Agent())
"""


def test_agent_console_text_command(tmp_path: Path) -> None:
    app = tmp_path / "console_app.py"
    app.write_text(textwrap.dedent(APP))
    agent_cli = Path(sys.executable).with_name("agent")
    done = subprocess.run(
        [
            str(agent_cli),
            "--log-level",
            "warning",
            "console",
            str(app),
            "--text",
            "--backend",
            "scripted",
        ],
        input="hi there\n",
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert "agent: Hello from the console." in done.stdout


SLOW_APP = """
import asyncio
from duplex.agents import Agent
from duplex.agents.testing import Reply


async def entrypoint(ctx):
    ctx.backend.replies.append(Reply(text="Answered after connecting.", audio_ms=100))
    connect = ctx.backend.connect

    async def slow_connect(**kw):  # a backend that takes a while (loading models, TLS)
        await asyncio.sleep(1.0)
        return await connect(**kw)

    ctx.backend.connect = slow_connect
    await ctx.start(Agent())
"""


def test_piped_text_is_kept_until_the_backend_is_up(tmp_path: Path) -> None:
    """``echo hi | agent console app.py --text``: the line arrives before the backend connects."""
    app = tmp_path / "slow_app.py"
    app.write_text(textwrap.dedent(SLOW_APP))
    agent_cli = Path(sys.executable).with_name("agent")
    done = subprocess.run(
        [str(agent_cli), "console", str(app), "--text", "--backend", "scripted"],
        input="hi\n",
        capture_output=True,
        text=True,
        timeout=60,  # the bug: no answer, exit after 120 s
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert "agent: Answered after connecting." in done.stdout
