"""A whole spoken call over each provider's stream: Whisper + Piper behind, Whisper as the judge."""

from __future__ import annotations

import asyncio
import logging

import pytest

from duplex.agents import AgentTranscribed, MetricsCollected, SessionClosed
from duplex.backends.cascade import offline_backend
from tests.hearing import normalize
from tests.speech import espeak_available, speak

from .conftest import phone_harness

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed"),
]
log = logging.getLogger(__name__)

PROVIDERS = ["twilio", "telnyx"]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_spoken_question_gets_a_spoken_reply(
    provider: str, whisper, record_property
) -> None:
    async with phone_harness(provider, offline_backend) as h:
        phone, _transport, session = await h.call()
        metrics = session.next_event(MetricsCollected)
        said = session.next_event(AgentTranscribed, lambda e: e.final)
        await phone.silence(300)
        await phone.speak(speak("Hello, can you hear me?", 16000, speed=150))
        loop = asyncio.get_running_loop()
        speech_end = loop.time()
        await phone.silence(1000)
        await asyncio.wait_for(metrics, 60)
        await phone.wait_quiet(1.0)
        assert phone.first_audio_at is not None
        latency_ms = 1000 * (phone.first_audio_at - speech_end)
        record_property("speech_end_to_first_audio_ms", round(latency_ms))
        log.warning(
            "%s: caller speech end -> first reply audio at the phone: %.0f ms", provider, latency_ms
        )
        played = phone.played_audio()
        heard = whisper(played.data[:, 0], 8000)
        # The stand-in model repeats the caller ("You said: hello, can you hear me."): the
        # phone must have heard the agent's words, whatever the backend's STT made of ours.
        reply = normalize((await said).text).split()
        assert heard.startswith("you said"), heard
        assert reply[:2] == ["you", "said"] and len(reply) > 2, reply
        common = set(reply) & set(heard.split())
        assert len(common) >= 0.7 * len(set(reply)), (reply, heard)
        assert phone.marks_played, "the phone echoed no marks"
        closed = session.next_event(SessionClosed)
        await phone.stop()
        await asyncio.wait_for(closed, 10)
