"""Hypothesis drives hostile SSE streams at a real cascade session through a real HTTP server.

Each example is one reply: a script of SSE events, some well-formed, some not, sent
by the scripted chat-completions server. The properties: the reply always ends
(never hangs); every anomaly ends it as a typed ``llm`` error event, never
``internal_error``; after the whole fuzz the same session answers a normal turn.
CI runs ~2,000 events; ``pytest -m heavy tests/fuzz`` runs ten times as many.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from duplex.agents.backend import BackendError, TextDelta
from duplex.agents.conversation import Conversation
from duplex.backends.cascade import (
    CascadeBackend,
    CascadeSession,
    ChatCompletionsLLM,
    LLMError,
    TextChunk,
    ToolCallChunk,
    UsageChunk,
)
from duplex.plugins.piper import PiperTTS
from duplex.plugins.whisper import WhisperSTT
from tests.cascade.chat_server import ChatServer, Raw, RawBytes, Step, Text
from tests.cascade.conftest import piper, transcriber, whisper_stt
from tests.cascade.helpers import EventLog

# The cascade's real models, loaded once per run (fixtures; imported, not redefined).
__all__ = ["piper", "transcriber", "whisper_stt"]

#: A short read timeout: no fuzzed stream stalls, so it only bounds a bug.
READ_TIMEOUT_S = 10.0


@dataclass
class Rig:
    loop: asyncio.AbstractEventLoop
    server: ChatServer
    llm: ChatCompletionsLLM
    session: CascadeSession
    log: EventLog
    events_sent: int = 0
    failed: int = 0
    codes: set[str] = field(default_factory=set)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)


@pytest.fixture(scope="module")
def rig(whisper_stt: WhisperSTT, piper: PiperTTS) -> Iterator[Rig]:
    loop = asyncio.new_event_loop()

    async def setup() -> Rig:
        server = await ChatServer().start()
        llm = ChatCompletionsLLM(server.url, "m", read_timeout_s=READ_TIMEOUT_S)
        backend = CascadeBackend(whisper_stt, llm, piper)
        session = await backend.connect(
            instructions="You are fuzzed.", tools=[], conversation=Conversation()
        )
        return Rig(loop, server, llm, session, EventLog(session))

    r = loop.run_until_complete(setup())
    yield r

    async def teardown() -> None:
        await r.session.aclose()
        await r.log.aclose()
        await r.llm.aclose()
        await r.server.stop()

    loop.run_until_complete(teardown())
    loop.close()


# --- what a stream may contain -------------------------------------------------------------
@dataclass(frozen=True)
class Line:
    step: Step
    #: True when the client must end the reply with an error because of this event.
    anomaly: bool


words = st.text(alphabet="abcdefghij klmnop", min_size=1, max_size=24)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def chunk(delta: Any) -> str:
    return json.dumps({"choices": [{"index": 0, "delta": delta}]})


benign = st.one_of(
    words.map(lambda w: Line(Text(w), False)),
    st.just(Line(Raw('{"choices": null, "usage": null}'), False)),
    st.just(Line(Raw(chunk({"content": None, "tool_calls": None})), False)),
    st.just(Line(RawBytes(b": keep-alive\n"), False)),
    st.sampled_from([b"event: message\n", b"id: 7\n", b"retry: 10\n"]).map(
        lambda b: Line(RawBytes(b), False)
    ),
)
anomalies = st.one_of(
    # Top-level JSON that is not an object.
    json_values.filter(lambda v: not isinstance(v, dict)).map(
        lambda v: Line(Raw(json.dumps(v)), True)
    ),
    # Not JSON at all.
    st.text(min_size=1, max_size=40)
    .filter(lambda t: t.strip() != "[DONE]" and "\n" not in t and "\r" not in t)
    .filter(lambda t: not _is_json(t))
    .map(lambda t: Line(Raw(t), True)),
    # Wrong shapes where the client needs a list or an object.
    json_values.filter(lambda v: not isinstance(v, list) and v not in (None, False, 0, "", {})).map(
        lambda v: Line(Raw(json.dumps({"choices": v})), True)
    ),
    json_values.filter(lambda v: not isinstance(v, dict) and bool(v)).map(
        lambda v: Line(Raw(chunk(v)), True)
    ),
    json_values.filter(lambda v: not isinstance(v, list) and bool(v)).map(
        lambda v: Line(Raw(chunk({"tool_calls": v})), True)
    ),
    # Nesting far deeper than a parser's recursion allows.
    st.integers(2_000, 200_000).map(lambda n: Line(Raw("[" * n + "]" * n), True)),
    # Numbers past Python's integer-string limit.
    st.integers(4_400, 6_000).map(
        lambda n: Line(Raw('{"choices": [], "n": ' + "7" * n + "}"), True)
    ),
    # One line over the 512 KB event limit.
    st.just(Line(RawBytes(b"data: " + b"z" * (520 * 1024) + b"\n\n"), True)),
)
# Objects of any shape: the client may use or ignore them, but must never crash on them.
anything = json_values.filter(lambda v: isinstance(v, dict)).map(
    lambda v: Line(Raw(json.dumps(v)), False)
)
clean = st.lists(st.one_of(benign, benign, anything), min_size=8, max_size=20)
dirty = st.lists(st.one_of(benign, benign, anomalies, anything), min_size=8, max_size=20)
#: Half the replies hold only well-formed (or ignorable) events, half also anomalies.
scripts = st.one_of(clean, dirty)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


def _is_wild(line: Line) -> bool:
    """A random object whose meaning depends on its content ("error" key, odd usage...)."""
    return (
        isinstance(line.step, Raw)
        and not line.anomaly
        and line.step.data.startswith("{")
        and (
            line.step.data not in ('{"choices": null, "usage": null}',)
            and not line.step.data.startswith('{"choices": [{"index": 0')
        )
    )


async def one_reply(rig: Rig, lines: list[Line]) -> None:
    rig.server.script(*(line.step for line in lines))
    rig.events_sent += len(lines)
    before = len(rig.log.events)
    handle = await rig.session.create_response()
    done = await asyncio.wait_for(handle.done, READ_TIMEOUT_S * 3)
    new = rig.log.events[before:]
    errors = [e for e in new if isinstance(e, BackendError)]
    # Never an untyped failure: every error is the language model's, by a typed path.
    assert all(e.code != "internal_error" and e.message.startswith("llm:") for e in errors), errors
    if any(line.anomaly for line in lines):
        assert done.status == "failed" and errors, (done, lines[:3])
    elif not any(_is_wild(line) for line in lines):
        assert done.status == "completed" and not errors, (done, errors)
    if done.status == "failed":
        assert errors, done  # a failed reply always says why
        rig.failed += 1
        rig.codes.update(e.code for e in errors)


async def one_stream(rig: Rig, lines: list[Line]) -> None:
    """The client alone: chunks of the declared types, or one `LLMError`; nothing else."""
    rig.server.script(*(line.step for line in lines))
    rig.events_sent += len(lines)
    chunks: list[object] = []
    try:
        async with asyncio.timeout(READ_TIMEOUT_S * 3):
            async for c in rig.llm.stream([{"role": "user", "content": "fuzz"}]):
                chunks.append(c)
    except LLMError as e:
        rig.failed += 1
        rig.codes.add(e.code)
        assert not any(line.anomaly for line in lines) or e.code == "llm_bad_chunk"
        if not any(line.anomaly or _is_wild(line) for line in lines):
            raise AssertionError(f"a clean stream failed: {e}") from e
        return
    assert not any(line.anomaly for line in lines), "an anomaly went unreported"
    assert all(isinstance(c, (TextChunk, ToolCallChunk, UsageChunk)) for c in chunks)


SETTINGS: dict[str, Any] = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}


@settings(max_examples=175, derandomize=True, **SETTINGS)
@given(lines=scripts)
def test_sse_fuzz_client(rig: Rig, lines: list[Line]) -> None:
    """~2,000 events straight at the client."""
    rig.run(one_stream(rig, lines))


@settings(max_examples=15, derandomize=True, **SETTINGS)
@given(lines=scripts)
def test_sse_fuzz_session(rig: Rig, lines: list[Line]) -> None:
    """Fewer, but through the whole cascade reply: speech, items, error events."""
    rig.run(one_reply(rig, lines))


@pytest.mark.heavy
@pytest.mark.timeout(1800)
@settings(max_examples=1500, **SETTINGS)
@given(lines=scripts)
def test_sse_fuzz_client_heavy(rig: Rig, lines: list[Line]) -> None:
    rig.run(one_stream(rig, lines))


@pytest.mark.heavy
@pytest.mark.timeout(1800)
@settings(max_examples=300, **SETTINGS)
@given(lines=scripts)
def test_sse_fuzz_session_heavy(rig: Rig, lines: list[Line]) -> None:
    rig.run(one_reply(rig, lines))


def test_the_session_answers_normally_after_the_fuzz(rig: Rig) -> None:
    async def normal_turn() -> None:
        rig.server.script(Text("All good "), Text("after the storm."))
        before = len(rig.log.events)
        done = await asyncio.wait_for((await rig.session.create_response()).done, 30)
        assert done.status == "completed"
        text = "".join(e.text for e in rig.log.events[before:] if isinstance(e, TextDelta))
        assert text.strip() == "All good after the storm."

    rig.run(normal_turn())
    print(f"fuzzed {rig.events_sent} SSE events, {rig.failed} replies failed: {sorted(rig.codes)}")
