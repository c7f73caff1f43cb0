"""Every server event the SDK documents is handled or knowingly ignored, and documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from duplex.backends.openai.dialect import normalize_type
from duplex.backends.openai.dispatch import CONVERSATION_HANDLERS, HANDLERS, IGNORED, Dispatcher
from duplex.backends.openai.stream_events import RESPONSE_HANDLERS, ResponseEvents

from .schema import server_event_types

DOC = Path(__file__).resolve().parents[2] / "docs" / "backends" / "openai.md"


@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_every_server_event_is_handled_or_ignored(dialect: str) -> None:
    missing = {
        t
        for t in server_event_types(dialect)  # type: ignore[arg-type]
        if normalize_type(t) not in HANDLERS and normalize_type(t) not in IGNORED
    }
    assert not missing
    assert not set(HANDLERS) & set(IGNORED)


def test_handlers_exist() -> None:
    assert all(callable(getattr(Dispatcher, n, None)) for n in CONVERSATION_HANDLERS.values())
    assert all(callable(getattr(ResponseEvents, n, None)) for n in RESPONSE_HANDLERS.values())
    assert set(HANDLERS) == set(CONVERSATION_HANDLERS) | set(RESPONSE_HANDLERS)


@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_every_server_event_is_in_the_docs_table(dialect: str) -> None:
    rows = [line for line in DOC.read_text().splitlines() if line.startswith("| `")]
    documented = {
        t for row in rows for t in re.findall(r"`([a-z_]+(?:\.[a-z_]+)+|error)`", row.split("|")[1])
    }
    missing = server_event_types(dialect) - documented  # type: ignore[arg-type]
    assert not missing, f"not in {DOC.name}: {sorted(missing)}"
