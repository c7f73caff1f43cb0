"""The `agent` console script: commands come from entry points, failures read as advice."""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from duplex.agents import cli
from duplex.agents.cli import Subparsers, main


def register_hello(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("hello", help="say hello")
    parser.add_argument("name")
    parser.set_defaults(run=lambda args: print(f"hello {args.name}"))


def register_lazy(subparsers: Subparsers) -> None:
    """A plugin that imports its heavy dependency only when run."""

    def run(args: argparse.Namespace) -> int:
        import aiortc  # noqa: F401

        return 0

    subparsers.add_parser("lazy").set_defaults(run=run)


def fake_commands(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    eps = [EntryPoint(name, value, "duplex.commands") for name, value in values.items()]
    monkeypatch.setattr(cli, "entry_points", lambda group: eps)


def test_commands_come_from_entry_points(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_commands(monkeypatch, hello=f"{__name__}:register_hello")
    assert main(["hello", "you"]) == 0
    assert capsys.readouterr().out == "hello you\n"
    assert main([]) == 2  # no command: help, not a traceback
    assert "hello" in capsys.readouterr().out


def test_real_entry_points_register_dev(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "dev" in out and "talk to your agent in the browser playground" in out


def test_command_whose_extra_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "aiortc", None)  # as if duplex-agents[webrtc] were absent
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "needs_aiortc_cli.py").write_text("import aiortc\ndef register(s): ...\n")
    fake_commands(monkeypatch, dev="needs_aiortc_cli:register", hello=f"{__name__}:register_hello")
    assert main(["dev", "app.py", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert "agent: error: command 'dev' needs 'aiortc'" in err
    assert "pip install 'duplex-agents[webrtc]'" in err
    assert "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "unavailable" in capsys.readouterr().out
    assert main(["hello", "still works"]) == 0


def test_plugin_that_fails_to_import_is_listed_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "no_portaudio.py").write_text("raise OSError('PortAudio library not found')\n")
    fake_commands(monkeypatch, console="no_portaudio:register")
    assert main(["console", "app.py"]) == 2
    err = capsys.readouterr().err
    assert "command 'console' (no_portaudio:register) failed to load" in err
    assert "PortAudio library not found" in err and "Traceback" not in err


def test_dependency_missing_at_run_time(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "aiortc", None)
    fake_commands(monkeypatch, lazy=f"{__name__}:register_lazy")
    assert main(["lazy"]) == 2
    assert "duplex-agents[webrtc]" in capsys.readouterr().err


def test_broken_app_shows_its_own_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = tmp_path / "broken_app.py"
    app.write_text("x = 1\ndef oops(:\n")
    assert main(["dev", str(app), "--backend", "scripted"]) == 2
    err = capsys.readouterr().err
    assert "agent: error: importing" in err and "SyntaxError" in err
    assert "broken_app.py" in err and "line 2" in err


def test_unknown_backend(capsys: pytest.CaptureFixture[str]) -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "assistant.py"
    assert main(["dev", str(example), "--backend", "nope"]) == 2
    assert "unknown backend 'nope'" in capsys.readouterr().err
