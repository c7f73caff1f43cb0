"""Hostile OpenAI Realtime server events: the reader survives and every anomaly is reported.

Drawn from the event types the client handles (with fields of the right name but any
shape or size) and from anything at all; sent over a real socket by the test server.
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from hypothesis import strategies as st

from duplex.agents.backend import BackendError, ResponseDone
from duplex.agents.conversation import Conversation
from duplex.backends.openai import ReconnectPolicy
from duplex.backends.openai.dispatch import HANDLERS

from ..openai.helpers import Collector, backend
from ..openai.server import RealtimeTestServer
from .strategies import JSON, draw, frames, shaped

FAST = ReconnectPolicy(max_attempts=6, initial_delay=0.01, max_delay=0.05)
#: Codes after which a real service will not serve us again: not fuzz material.
FATAL = {
    "invalid_api_key",
    "insufficient_quota",
    "account_deactivated",
    "billing_hard_limit_reached",
}

IDS = st.sampled_from(["item_1", "item_2", "resp_1", "call_1"]) | JSON
ITEM = shaped(
    {
        "id": IDS,
        "type": st.sampled_from(["message", "function_call", "function_call_output"]) | JSON,
        "role": st.sampled_from(["user", "assistant", "system"]) | JSON,
        "status": JSON,
        "content": st.lists(shaped({"type": JSON, "text": JSON, "transcript": JSON}), max_size=2)
        | JSON,
        "call_id": IDS,
        "name": JSON,
        "arguments": JSON,
    }
)
RESPONSE = shaped(
    {"id": IDS, "status": JSON, "status_details": JSON, "usage": JSON, "metadata": JSON}
)
ERROR = shaped(
    {
        "type": JSON,
        "code": st.sampled_from(["invalid_value", "unknown"]) | st.integers(),
        "message": JSON,
        "param": JSON,
        "event_id": JSON,
    }
)
FIELDS = {
    "item_id": IDS,
    "response_id": IDS,
    "previous_item_id": IDS,
    "item": ITEM,
    "response": RESPONSE,
    "error": ERROR,
    "delta": JSON | st.sampled_from(["AAAA", "hello"]),
    "transcript": JSON,
    "text": JSON,
    "arguments": JSON,
    "audio_start_ms": JSON,
    "audio_end_ms": JSON,
    "part": JSON,
    "session": JSON,
    "rate_limits": JSON,
    "content_index": JSON,
}
EVENTS = st.builds(
    lambda kind, body: {**body, "type": kind},
    st.sampled_from(sorted(HANDLERS)) | st.text(max_size=30),
    shaped(FIELDS),
).filter(lambda e: not (e["type"] == "error" and _code(e) in FATAL))


def _code(event: dict[str, object]) -> object:
    err = event.get("error")
    return err.get("code") if isinstance(err, dict) else None


async def _fuzz(server: RealtimeTestServer, budget: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="duplex.backends.openai")
    session = await backend(
        server, turn_detection=None, reconnect=FAST, reply_start_timeout=0.5, reply_idle_timeout=1.0
    ).connect(instructions="x", tools=[], conversation=Conversation())
    col = Collector(session)
    sent = draw(frames(EVENTS), budget)
    for frame in sent:
        await server.send_raw(frame)
    await server.send_raw(json.dumps({"type": "duplex.fuzz.end"}))
    # Everything sent was read (the socket's order) before the normal turn below.
    handle = None
    for _ in range(5):  # stray fuzzed responses may hold the line until the watchdog
        handle = await session.create_response()
        try:
            done = await asyncio.wait_for(handle.done, 10)
        except Exception:
            continue
        if done.status == "completed":
            break
    assert handle is not None and (await handle.done).status == "completed"
    errors = col.of(BackendError)
    assert all(e.recoverable for e in errors)  # nothing fuzzed is a reason to give up
    malformed = [e for e in errors if e.code == "malformed_event"]
    assert 0 < len(malformed) <= len(sent)  # anomalies were reported, one error at most each
    assert len(col.of(ResponseDone)) >= 1
    # A flood of distinct unknown types does not become a flood of log lines.
    assert len(caplog.records) < 200
    await session.aclose()
    await col.aclose()


async def test_fuzzed_server_events_leave_the_session_responsive(
    server: RealtimeTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    await _fuzz(server, 2000, caplog)


@pytest.mark.heavy
async def test_fuzzed_server_events_large_budget(
    server: RealtimeTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    await _fuzz(server, 20_000, caplog)
