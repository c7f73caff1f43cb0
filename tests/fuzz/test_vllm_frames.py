"""Hostile vLLM ``/v1/realtime`` frames mid-utterance: the STT worker lives on.

Frames are drawn from vLLM's own event types (any shape) and from anything at all,
and injected by the test server as the utterance's generation starts. Whatever they
do to that utterance (a transcript, or one typed `STTError`), the next one is
transcribed normally and every unusable frame was counted.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from hypothesis import strategies as st

from duplex.backends.cascade import STTError
from duplex.backends.vllm import VLLMRealtimeSTT, VLLMRealtimeSTTSession

from ..cascade.helpers import words
from ..cascade.vllm_server import VLLMRealtimeServer
from ..speech import speak, split
from .strategies import JSON, draw, frames, shaped

MODEL = "mistralai/Voxtral-Mini-4B-Realtime-2602"
EVENTS = st.builds(
    lambda kind, body: {**body, "type": kind},
    st.sampled_from(["transcription.delta", "session.created", "session.updated", "error"])
    | st.text(max_size=30),
    shaped({"delta": JSON | st.text(max_size=8), "error": JSON, "code": JSON, "usage": JSON}),
)


async def _turn(session: VLLMRealtimeSTTSession, text: str) -> str:
    utt = session.begin()
    for frame in split(speak(text), 20.0):
        await utt.push(frame)
    return await asyncio.wait_for(utt.finish(), 60)


async def _fuzz(server: VLLMRealtimeServer, budget: int) -> None:
    sent = draw(frames(EVENTS), budget)
    stt = VLLMRealtimeSTT(server.url, MODEL)
    session = await stt.connect()
    try:
        server.inject_next = sent
        # A well-formed error event among the fuzz may fail that turn: typed, and only it.
        with contextlib.suppress(STTError):
            await _turn(session, "Please turn on the kitchen lights.")
        text = await _turn(session, "What is the weather in Paris today?")
    finally:
        await session.aclose()
        await stt.aclose()
    assert "paris" in words(text)
    assert 0 < session.anomalies.total <= len(sent)


async def test_fuzzed_frames_leave_the_stt_responsive(vllm_server: VLLMRealtimeServer) -> None:
    await _fuzz(vllm_server, 2000)


@pytest.mark.heavy
async def test_fuzzed_frames_large_budget(vllm_server: VLLMRealtimeServer) -> None:
    await _fuzz(vllm_server, 20_000)
