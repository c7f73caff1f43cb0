"""`agent join` end to end in a simulated room, and the `run`/`join` command lines."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest

from duplex.agents.cli import build_parser
from duplex.plugins.livekit.cli import join_command, join_room, run_command

from .conftest import CREDS
from .sim import SimulatedRoom

APP = """
from duplex.agents import Agent
from duplex.agents.testing import Reply


class Greeter(Agent):
    instructions = "Greet whoever joins."

    async def on_enter(self, session):
        await session.generate_reply()


async def entrypoint(ctx):
    # the command chose the scripted backend (--backend scripted): give it a line
    ctx.backend.replies.append(Reply(text="Welcome to the room", audio_ms=300))
    await ctx.start(Greeter())
"""


@pytest.fixture
def app_file(tmp_path: Path) -> str:
    path = tmp_path / "greeter_app.py"
    path.write_text(textwrap.dedent(APP))
    return str(path)


def _join_args(app: str, *extra: str):
    return build_parser().parse_args(
        [
            "join",
            app,
            "--room",
            "test-room",
            "--backend",
            "scripted",
            "--url",
            CREDS.url,
            "--api-key",
            CREDS.api_key or "",
            "--api-secret",
            CREDS.api_secret or "",
            *extra,
        ]
    )


async def test_join_greets_the_caller_and_leaves_with_them(app_file: str) -> None:
    room = SimulatedRoom()
    args = _join_args(app_file, "--identity", "greeter-bot", "--name", "Greeter")
    assert args.run is join_command
    joined = asyncio.ensure_future(join_room(args, room=room))
    # the bot is in the room once its track is published
    await asyncio.wait_for(room.track_published.wait(), 5)
    assert room.claims is not None and room.claims.identity == "greeter-bot"
    assert room.claims.name == "Greeter"
    loud = 0.0
    async for frame in room.agent_audio(24000):  # the greeting is heard in the room
        if frame.rms() > 0.05:
            loud += frame.duration_ms
        elif loud >= 250:
            break
    await room.join("alice")
    await room.leave("alice")
    reason = await asyncio.wait_for(joined, 5)
    assert reason == "participant alice left"
    assert not room.isconnected()


def test_run_and_join_command_lines(app_file: str) -> None:
    parser = build_parser()
    args = parser.parse_args(
        [
            "run",
            app_file,
            "--agent-name",
            "reception",
            "--max-jobs",
            "4",
            "--dev",
            "--kinds",
            "sip",
            "--drain-timeout",
            "30",
        ]
    )
    assert args.run is run_command
    assert (args.agent_name, args.max_jobs, args.dev, args.kinds) == ("reception", 4, True, "sip")
    assert args.drain_timeout == 30
    with pytest.raises(SystemExit):
        parser.parse_args(["join", app_file])  # --room is required


def test_run_without_a_server_url_is_a_clear_error(
    app_file: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from duplex.agents.cli import main

    for name in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"):
        monkeypatch.delenv(name, raising=False)
    assert main(["run", app_file, "--backend", "scripted"]) == 2
    assert "LIVEKIT_URL" in capsys.readouterr().err
