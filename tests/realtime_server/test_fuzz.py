"""Malformed and out-of-order client events get the service's error codes; the session lives.

Hypothesis draws event sequences; each event is followed by a probe (a retrieve of an
unknown id) so the answers to one event are exactly those received before the probe's.
The server runs in its own thread with its own event loop, the client is the
``websockets`` sync client, so hypothesis drives plain synchronous examples.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect

from duplex.agents.vad import EnergyVAD
from duplex.backends.cascade import CascadeBackend, EchoLLM
from duplex.plugins.piper import PiperTTS
from duplex.plugins.whisper import WhisperSTT
from duplex.server.realtime import RealtimeServer, ServerOptions

from ..openai.schema import SchemaError, validate
from .conftest import API_KEY

KNOWN = {
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "output_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.retrieve",
    "conversation.item.truncate",
    "conversation.item.delete",
    "response.create",
    "response.cancel",
}


class ThreadServer:
    def __init__(self, whisper: WhisperSTT, piper: PiperTTS) -> None:
        self.schema_errors: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        backend = CascadeBackend(whisper, EchoLLM(), piper)
        options = ServerOptions(port=0, api_keys=(API_KEY,), vad=EnergyVAD(), event_hook=self._hook)
        self.server = RealtimeServer(backend, options)
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(60)
        self.url = f"ws://127.0.0.1:{self.server.port}/v1/realtime?model=fuzz"

    def _hook(self, dialect: Any, event: dict[str, Any]) -> None:
        try:
            validate(event, dialect=dialect, side="server")
        except SchemaError as e:
            self.schema_errors.append(str(e)[-400:])

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture(scope="module")
def thread_server() -> Iterator[ThreadServer]:
    srv = ThreadServer(WhisperSTT(), PiperTTS(noise_scale=0.0, noise_w_scale=0.0))
    yield srv
    srv.close()
    assert not srv.schema_errors, "\n".join(srv.schema_errors)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# Each strategy yields (what to send, the error code it must get, or None for "no error",
# or "any" when the answer depends on timing the test does not control).
ids = st.text("abcdefghijklmnop0123456789_", min_size=1, max_size=12).map(lambda s: "zz_" + s)
unknown_type = st.text(min_size=1, max_size=30).filter(lambda t: t not in KNOWN)
events = st.one_of(
    unknown_type.map(lambda t: ({"type": t}, "invalid_value")),
    st.just(({"type": "input_audio_buffer.append", "audio": "@@not base64@@"}, "invalid_value")),
    st.integers(0, 40).map(
        lambda n: (
            {"type": "input_audio_buffer.append", "audio": b64(b"\1" * (2 * n + 1))},
            "invalid_value",
        )
    ),
    st.integers(2, 3).map(
        lambda k: ({"type": "input_audio_buffer.append", "audio": b64(bytes(4800 * k))}, "append")
    ),
    st.just(({"type": "input_audio_buffer.commit"}, "commit")),
    st.just(({"type": "input_audio_buffer.clear"}, "clear")),
    ids.map(
        lambda i: (
            {"type": "conversation.item.delete", "item_id": i},
            "item_delete_invalid_item_id",
        )
    ),
    ids.map(
        lambda i: (
            {"type": "conversation.item.retrieve", "item_id": i},
            "item_retrieve_invalid_item_id",
        )
    ),
    st.tuples(ids, st.integers(0, 10**6)).map(
        lambda t: (
            {
                "type": "conversation.item.truncate",
                "item_id": t[0],
                "content_index": 0,
                "audio_end_ms": t[1],
            },
            "item_truncate_invalid_item_id",
        )
    ),
    st.integers(0, 10**6).map(
        lambda ms: (
            {
                "type": "conversation.item.truncate",
                "item_id": "item_known",
                "content_index": 0,
                "audio_end_ms": ms,
            },
            "invalid_value",
        )
    ),
    st.just(({"type": "conversation.item.delete"}, "missing_required_parameter")),
    st.just(({"type": "input_audio_buffer.clear", "bogus": 1}, "unknown_parameter")),
    st.just(({"type": "output_audio_buffer.clear"}, "unsupported_feature")),
    st.just(("{not json", "invalid_json")),
    st.just(({"type": "response.create"}, "any")),
    st.just(({"type": "response.cancel"}, "any")),
)


def _until_probe(ws: Any, probe: str) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while True:
        ev = json.loads(ws.recv(timeout=60))
        if ev["type"] == "error" and ev["error"].get("event_id") == probe:
            return got
        got.append(ev)


SEQUENCES = st.lists(st.tuples(events, st.booleans()), min_size=1, max_size=12)
_SETTINGS = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}


@settings(max_examples=12, **_SETTINGS)  # type: ignore[arg-type]
@given(seq=SEQUENCES)
def test_malformed_events_get_service_errors_and_the_session_lives(
    thread_server: ThreadServer, seq: list[tuple[tuple[Any, str | None], bool]]
) -> None:
    _run(thread_server, seq)


@pytest.mark.heavy
@settings(max_examples=400, **_SETTINGS)  # type: ignore[arg-type]
@given(seq=SEQUENCES)
def test_malformed_events_large_budget(
    thread_server: ThreadServer, seq: list[tuple[tuple[Any, str | None], bool]]
) -> None:
    _run(thread_server, seq)


def _run(thread_server: ThreadServer, seq: list[tuple[tuple[Any, str | None], bool]]) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with connect(thread_server.url, additional_headers=headers, max_size=None) as ws:
        assert json.loads(ws.recv(timeout=30))["type"] == "session.created"
        setup = [
            {
                "type": "session.update",
                "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
            },
            {
                "type": "conversation.item.create",
                "item": {
                    "id": "item_known",
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "hi"}],
                },
            },
        ]
        for ev in setup:
            ws.send(json.dumps(ev))
        buffered = 0
        for k, ((event, expect), with_id) in enumerate(seq):
            eid = f"evt_{k}"
            if isinstance(event, dict) and with_id:
                event = {**event, "event_id": eid}
            ws.send(event if isinstance(event, str) else json.dumps(event))
            probe = f"probe_{k}"
            ws.send(
                json.dumps(
                    {"type": "conversation.item.retrieve", "item_id": "nope", "event_id": probe}
                )
            )
            answers = _until_probe(ws, probe)
            errors = [a["error"] for a in answers if a["type"] == "error"]
            if expect == "append":
                buffered += 1
                expect = None
            elif expect == "commit":
                expect, buffered = (None if buffered else "input_audio_buffer_commit_empty"), 0
            elif expect == "clear":
                expect, buffered = None, 0
                assert any(a["type"] == "input_audio_buffer.cleared" for a in answers)
            if expect == "any":
                allowed = {"conversation_already_has_active_response", "response_cancel_not_active"}
                assert all(e["code"] in allowed for e in errors), errors
            elif expect is None:
                assert not errors, (event, errors)
            else:
                mine = [e for e in errors if e["code"] == expect]
                assert mine, (event, expect, errors)
                if with_id and isinstance(event, dict):
                    assert mine[0].get("event_id") == eid
        # Still alive: a new item is created and acknowledged.
        item = {
            "id": "item_alive",
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "ok"}],
        }
        ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
        while True:
            ev = json.loads(ws.recv(timeout=60))
            if ev["type"] == "conversation.item.added" and ev["item"]["id"] == "item_alive":
                break
