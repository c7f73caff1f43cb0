"""App discovery and backend choice shared by every `agent` command."""

from __future__ import annotations

import sys
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

from duplex.agents import AgentSession, ConfigurationError, EnergyVAD
from duplex.agents.app import (
    AppLoadError,
    MissingExtraError,
    PortInUseError,
    choose_backend,
    default_backend_name,
    extra_for_module,
    load_app,
    translate_bind_errors,
)
from duplex.agents.testing import MemoryTransport, ScriptedBackend

AGENT = """
from duplex.agents import Agent, function_tool

class Helper(Agent):
    instructions = "helpful"

    @function_tool
    def ping(self) -> str:
        \"\"\"Answers pong.\"\"\"
        return "pong"
"""


def write(tmp_path: Path, name: str, source: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return str(path)


def test_file_with_one_agent(tmp_path: Path) -> None:
    spec = load_app(write(tmp_path, "app_one.py", AGENT))
    assert spec.kind == "agent" and spec.name.endswith("app_one.py:Helper")
    assert [t.name for t in spec.target().tools] == ["ping"]


def test_module_path_and_explicit_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    write(tmp_path, "mod_two.py", AGENT + "\nclass Other(Helper):\n    pass\n")
    with pytest.raises(AppLoadError, match=r"several agents \(Helper, Other\).*mod_two:Helper"):
        load_app("mod_two")
    assert load_app("mod_two:Other").target.__name__ == "Other"
    with pytest.raises(AppLoadError, match="no attribute 'Nope'"):
        load_app("mod_two:Nope")


def test_imported_agents_do_not_count(tmp_path: Path) -> None:
    src = "from duplex.agents import Agent\nfrom duplex.agents.testing import ScriptedBackend\n"
    with pytest.raises(AppLoadError, match="defines no Agent subclass"):
        load_app(write(tmp_path, "app_none.py", src))


def test_helpful_errors_for_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(AppLoadError, match="no such file"):
        load_app(str(tmp_path / "missing.py"))
    with pytest.raises(AppLoadError, match="no module named 'not_a_module_xyz'"):
        load_app("not_a_module_xyz")
    with pytest.raises(AppLoadError, match=r"neither a \.py file nor a module"):
        load_app("what ever")
    broken = write(tmp_path, "app_broken.py", "def oops(:\n")
    with pytest.raises(AppLoadError, match="SyntaxError") as info:
        load_app(broken)
    assert isinstance(info.value.__cause__, SyntaxError)
    raising = write(tmp_path, "app_raises.py", "raise RuntimeError('config missing')\n")
    with pytest.raises(AppLoadError, match="config missing"):
        load_app(raising)
    assert "_duplex_app_app_raises" not in sys.modules


def test_missing_dependency_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # as if the extra were not installed
    path = write(tmp_path, "app_console.py", "import sounddevice\n" + AGENT)
    with pytest.raises(MissingExtraError, match=r"pip install 'duplex-agents\[console\]'") as e:
        load_app(path)
    assert e.value.extra == "console" and e.value.module == "sounddevice"


def test_extra_for_module() -> None:
    assert extra_for_module("aiortc") == "webrtc"
    assert extra_for_module("webrtcvad") == "webrtcvad"  # the dist is webrtcvad-wheels
    assert extra_for_module("faster_whisper") == "whisper"  # smallest extra that has it
    assert extra_for_module("duplex.plugins.console", hint="console") == "console"
    assert extra_for_module("no_such_thing") is None


async def test_agent_class_runs_with_the_given_backend_and_options(tmp_path: Path) -> None:
    spec = load_app(write(tmp_path, "app_run.py", AGENT))
    backend = ScriptedBackend()
    vad = EnergyVAD()
    session = await spec.start(MemoryTransport(), backend, vad=vad)
    try:
        assert isinstance(session, AgentSession) and session.vad is vad
        assert [t.name for t in backend.session.tools] == ["ping"]
    finally:
        await session.aclose()


async def test_entrypoint_gets_a_context(tmp_path: Path) -> None:
    src = AGENT + textwrap.dedent(
        """
        seen = []

        async def entrypoint(ctx):
            seen.append(ctx.session_options)
            await ctx.start(Helper(instructions="from entrypoint"))
        """
    )
    spec = load_app(write(tmp_path, "app_entry.py", src))
    assert spec.kind == "entrypoint"
    backend = ScriptedBackend()
    session = await spec.start(MemoryTransport(), backend, vad=EnergyVAD())
    try:
        assert backend.session.instructions == "from entrypoint"
        assert "vad" in spec.module.seen[0]
    finally:
        await session.aclose()

    lazy = load_app(write(tmp_path, "app_lazy.py", "async def entrypoint(ctx):\n    pass\n"))
    with pytest.raises(AppLoadError, match="without starting a session"):
        await lazy.start(MemoryTransport(), ScriptedBackend())


@pytest.mark.parametrize(
    "factory",
    [
        "def create_session(backend):\n    return AgentSession(agent=Helper(), backend=backend)\n",
        "async def create_session():\n"
        "    return AgentSession(agent=Helper(), backend=ScriptedBackend())\n",
    ],
)
async def test_create_session(tmp_path: Path, factory: str) -> None:
    src = (
        AGENT
        + "from duplex.agents import AgentSession\n"
        + "from duplex.agents.testing import ScriptedBackend\n"
        + factory
    )
    spec = load_app(write(tmp_path, f"app_factory_{len(factory)}.py", src))
    assert spec.kind == "create_session"
    transport = MemoryTransport()
    session = await spec.start(transport, ScriptedBackend())
    try:
        assert session.agent_state == "listening"
    finally:
        await session.aclose()
    bad = load_app(write(tmp_path, "app_badfactory.py", "def create_session():\n    return 42\n"))
    with pytest.raises(AppLoadError, match="returned int, expected an AgentSession"):
        await bad.start(MemoryTransport(), ScriptedBackend())


# --- backends ------------------------------------------------------------------------------
def fake_backends(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    eps = [EntryPoint(name, value, "duplex.backends") for name, value in values.items()]
    monkeypatch.setattr(
        "duplex.agents.app.entry_points", lambda group: eps if group == "duplex.backends" else []
    )


def make_scripted() -> ScriptedBackend:
    return ScriptedBackend()


def not_a_backend() -> Any:
    return object()


def broken_backend() -> Any:
    raise RuntimeError("model file is corrupt")


class Recorded(ScriptedBackend):
    """Remembers which automatic choice built it."""

    made: list[str] = []  # noqa: RUF012 - shared on purpose

    def __init__(self, name: str) -> None:
        super().__init__()
        Recorded.made.append(name)


def Recorded_openai() -> Recorded:
    return Recorded("openai")


def Recorded_vllm() -> Recorded:
    return Recorded("vllm")


def Recorded_offline() -> Recorded:
    return Recorded("offline")


def test_backend_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = choose_backend("scripted")  # the real entry point from pyproject
    assert isinstance(backend, ScriptedBackend)
    with pytest.raises(ConfigurationError, match="installed backends") as listed:
        choose_backend("nope")
    assert "offline" in str(listed.value) and "scripted" not in str(listed.value)
    fake_backends(
        monkeypatch, scripted=f"{__name__}:make_scripted", odd=f"{__name__}:not_a_backend"
    )
    with pytest.raises(ConfigurationError, match=r"unknown backend 'nope'.*odd, scripted"):
        choose_backend("nope")
    with pytest.raises(ConfigurationError, match="not a duplex Backend"):
        choose_backend("odd")
    fake_backends(monkeypatch, broken=f"{__name__}:broken_backend")
    with pytest.raises(ConfigurationError, match=r"'broken' could not be created.*corrupt"):
        choose_backend("broken")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"OPENAI_API_KEY": "sk-test", "DUPLEX_VLLM_URL": "http://x"}, "openai"),
        ({"DUPLEX_VLLM_URL": "http://localhost:8000"}, "vllm"),
        ({"OPENAI_API_KEY": ""}, "offline"),
    ],
)
def test_automatic_backend_choice(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    names = ("openai", "vllm", "offline")
    fake_backends(monkeypatch, **{n: f"{__name__}:Recorded_{n}" for n in names})
    Recorded.made.clear()
    assert isinstance(choose_backend(None, environ=env), Recorded)
    assert Recorded.made == [expected]
    assert default_backend_name(env) == expected


def test_backend_with_missing_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aiortc", None)  # as if the webrtc extra were missing
    monkeypatch.syspath_prepend(str(tmp_path))
    write(tmp_path, "needs_aiortc.py", "import aiortc\n")
    fake_backends(monkeypatch, peer="needs_aiortc:Backend")
    with pytest.raises(MissingExtraError, match=r"backend 'peer'.*duplex-agents\[webrtc\]"):
        choose_backend("peer")


def test_port_in_use_is_translated() -> None:
    import errno

    busy = r"port 8080 on 127\.0\.0\.1 is already in use"
    with pytest.raises(PortInUseError, match=busy), translate_bind_errors("127.0.0.1", 8080):
        raise OSError(errno.EADDRINUSE, "Address already in use")
    with pytest.raises(PermissionError), translate_bind_errors("127.0.0.1", 80):
        raise PermissionError(errno.EACCES, "Permission denied")


class Unreachable(ScriptedBackend):
    async def connect(self, **kwargs: Any) -> Any:
        raise ConnectionRefusedError("model server is down")


async def test_a_failed_start_closes_what_it_opened(tmp_path: Path) -> None:
    spec = load_app(write(tmp_path, "app_down.py", AGENT))
    transport = MemoryTransport()
    with pytest.raises(ConnectionRefusedError):
        await spec.start(transport, Unreachable())
    assert transport.closed.is_set()  # the session closed the call it had started
