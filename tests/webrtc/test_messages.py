"""The data-channel protocol: every session event the page shows has a stable JSON form."""

from __future__ import annotations

import json

import pytest

from duplex.agents.conversation import FunctionCall, FunctionCallOutput, Message
from duplex.agents.events import (
    AgentInterrupted,
    AgentStateChanged,
    AgentTranscribed,
    ConversationItemAdded,
    MetricsCollected,
    SessionClosed,
    SessionError,
    ToolExecuted,
    TurnMetrics,
    UserStateChanged,
    UserTranscribed,
)
from duplex.plugins.webrtc import ProtocolError, event_to_message, parse_client_message

CALL = FunctionCall("call_1", "multiply", '{"a": 6, "b": 7}', id="item_c")
OUTPUT = FunctionCallOutput("call_1", "42.0", name="multiply")


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (AgentStateChanged("listening", "thinking"), {"type": "agent_state", "state": "thinking"}),
        (UserStateChanged("listening", "speaking"), {"type": "user_state", "state": "speaking"}),
        (UserTranscribed("i1", "hi", True), {"role": "user", "text": "hi", "final": True}),
        (AgentTranscribed("i2", "Hel", False), {"role": "assistant", "final": False}),
        (ConversationItemAdded(CALL), {"type": "tool_call", "name": "multiply"}),
        (
            ConversationItemAdded(Message.text_message("user", "typed", id="i3")),
            {"type": "transcript", "role": "user", "item_id": "i3", "text": "typed"},
        ),
        (
            ToolExecuted(CALL, OUTPUT, 0.01234),
            {"type": "tool_result", "output": "42.0", "is_error": False, "duration_ms": 12.3},
        ),
        (
            MetricsCollected(TurnMetrics("r1", end_to_end_ms=512.345, played_ms=900.0)),
            {"type": "metrics", "end_to_end_ms": 512.3, "backend_ttfa_ms": None},
        ),
        (
            AgentInterrupted("i2", 640.0, 35.55),
            {"type": "interrupted", "item_id": "i2", "played_ms": 640.0, "latency_ms": 35.5},
        ),
        (SessionError("x", "bad", True), {"type": "error", "code": "x", "message": "bad"}),
        (SessionClosed("bye"), {"type": "closed", "reason": "bye"}),
    ],
)
def test_events_become_small_json_messages(event: object, expected: dict[str, object]) -> None:
    msg = event_to_message(event)
    assert msg is not None
    assert expected.items() <= msg.items()
    json.dumps(msg)  # and it serialises as is


def test_events_the_page_does_not_need_are_skipped() -> None:
    assert event_to_message(ConversationItemAdded(Message.text_message("assistant", "x"))) is None
    assert event_to_message(ConversationItemAdded(OUTPUT)) is None
    assert event_to_message("not an event") is None


def test_client_messages_are_validated() -> None:
    assert parse_client_message('{"type": "text", "text": " hi "}') == {
        "type": "text",
        "text": "hi",
    }
    assert parse_client_message(b'{"type": "hangup"}') == {"type": "hangup"}
    for raw, reason in [
        ("nope", "not JSON"),
        ("[]", "object"),
        ('{"text": "x"}', "type"),
        ('{"type": "text", "text": "   "}', "non-empty"),
        ('{"type": "text", "text": 5}', "non-empty"),
        (json.dumps({"type": "text", "text": "x" * 5000}), "longer"),
        ('{"type": "exec"}', "unknown"),
    ]:
        with pytest.raises(ProtocolError, match=reason):
            parse_client_message(raw)
