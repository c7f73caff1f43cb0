"""examples/openai_assistant.py runs against an OpenAI-protocol server (here the test one)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from .server import API_KEY, RealtimeTestServer, Reply

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "openai_assistant.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("openai_assistant_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_typed_turn_with_both_tools(
    server: RealtimeTestServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    server.replies.extend(
        [
            Reply(
                text="",
                function_calls=(
                    ("get_weather", '{"city": "Rome"}'),
                    ("book_table", '{"restaurant": "Da Enzo", "people": 2, "time": "20:00"}'),
                ),
            ),
            Reply(text="Sunny in Rome, and Da Enzo is booked: BK001."),
        ]
    )
    example = load_example()
    answer = await example.typed_turn(
        "Weather in Rome? Book Da Enzo for two at 8pm.", server.base_url
    )
    assert answer == "Sunny in Rome, and Da Enzo is booked: BK001."
    outputs = [
        e["item"]["output"]
        for e in server.of_type("conversation.item.create")
        if e["item"]["type"] == "function_call_output"
    ]
    assert sorted(outputs) == ["booked Da Enzo for 2 at 20:00, reference BK001", "sunny, 24 °C"]
    user = [
        e["item"]
        for e in server.of_type("conversation.item.create")
        if e["item"].get("role") == "user"
    ]
    assert user[0]["content"] == [
        {"type": "input_text", "text": "Weather in Rome? Book Da Enzo for two at 8pm."}
    ]
    assert "[tool] book_table" in capsys.readouterr().out


async def test_the_cli_app_loader_builds_an_openai_session(
    server: RealtimeTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `agent dev` / `agent console` do with the file: load it, start its session."""
    from duplex.agents.app import load_app
    from duplex.agents.events import AgentTranscribed
    from duplex.agents.testing import MemoryTransport

    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    spec = load_app(str(EXAMPLE))
    assert spec.kind == "create_session"
    server.replies.append(Reply(text="Hello from the concierge."))
    session = await spec.start(MemoryTransport(), backend=None)  # type: ignore[arg-type]
    await session.send_text("hi")
    said = await session.wait_for(AgentTranscribed, lambda e: e.final, timeout=5)
    assert said.text == "Hello from the concierge."
    assert server.current.session["instructions"].startswith("You are a restaurant concierge.")
    await session.aclose()
