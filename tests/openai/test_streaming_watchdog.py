"""Deltas do not wake the reply watchdog; it re-reads a reply's last event at its deadline.

Against the benchmark server, which streams a 2.5 s reply at 1x in 50 ms deltas:
a reply that streams for much longer than ``reply_idle_timeout`` is never failed,
because the watchdog, waking at each deadline, finds the reply's latest delta.
(`test_connections.test_a_reply_that_stops_midway_is_failed` is the other half.)
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator

import pytest

from bench import config as C
from duplex.agents.backend import AudioDelta, BackendError
from duplex.agents.conversation import Conversation
from duplex.backends.openai import OpenAIRealtime

from .helpers import Collector


@pytest.fixture
def paced_server() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.server"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().split()[1])
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(10)


async def test_a_reply_streaming_past_the_idle_timeout_is_not_failed(paced_server: str) -> None:
    backend = OpenAIRealtime(
        base_url=paced_server,
        api_key="sk-test",
        model="watchdog",
        env={},
        turn_detection=None,
        reply_idle_timeout=0.3,
        max_session_duration=None,
    )
    session = await backend.connect(instructions="x", tools=[], conversation=Conversation())
    col = Collector(session)
    handle = await session.create_response()
    done = await asyncio.wait_for(handle.done, 20)
    assert done.status == "completed"
    deltas = [d for d in col.of(AudioDelta) if d.response_id == done.response_id]
    assert len(deltas) == C.REPLY_MS // C.CHUNK_MS
    assert [e for e in col.of(BackendError) if e.code == "response_timeout"] == []
    await session.aclose()
    await col.aclose()
