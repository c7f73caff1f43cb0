"""Preemptive replies: used when the final transcript matches, dropped without a trace when not."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from duplex.agents.audio import AudioFrame
from duplex.agents.backend import AudioDelta, ItemAdded, ResponseStarted, TextDelta, UserTranscript
from duplex.agents.conversation import Conversation, Message
from duplex.agents.stages import TTS
from duplex.backends.cascade import CascadeBackend, CascadeSession, EchoLLM
from duplex.plugins.piper import PiperTTS
from duplex.plugins.whisper import WhisperSTT

from ..cascade.helpers import EventLog, words
from ..speech import concat, silence, speak, split

LIGHTS = "Please turn on the kitchen lights."


class CountingTTS(TTS):
    """Piper, counting what it was asked to say (to see what a speculation synthesised)."""

    def __init__(self, inner: PiperTTS) -> None:
        self.inner = inner
        self.sample_rate = inner.sample_rate
        self.texts: list[str] = []

    def synthesize(self, text: str) -> AsyncIterator[AudioFrame]:
        self.texts.append(text)
        return self.inner.synthesize(text)


Call = tuple[CascadeSession, EventLog, "CountingTTS"]


@pytest.fixture(scope="module")
def stt() -> WhisperSTT:
    return WhisperSTT()


@pytest.fixture
async def call(stt: WhisperSTT, piper: PiperTTS) -> AsyncIterator[Call]:
    tts = CountingTTS(piper)
    backend = CascadeBackend(stt, EchoLLM(), tts)
    session = await backend.connect(instructions="Echo.", tools=[], conversation=Conversation())
    log = EventLog(session)
    yield session, log, tts
    await session.aclose()
    await log.aclose()


async def push(session: CascadeSession, audio: AudioFrame) -> None:
    for frame in split(audio, 20):
        await session.push_audio(frame)


def spoken_replies(log: EventLog) -> list[str]:
    return [
        "".join(e.text for e in log.of(TextDelta) if e.response_id == r.response_id)
        for r in log.of(ResponseStarted)
    ]


async def test_a_matching_final_uses_the_speculated_reply(call: Call) -> None:
    session, log, tts = call
    pre = session.preemption
    assert pre is not None  # on by default
    await push(session, concat(speak(LIGHTS), silence(0.35)))  # the caller pauses
    await log.wait_for(UserTranscript, lambda e: not e.final and "lights" in words(e.text))
    assert pre.started == 1  # the reply began before the turn was committed
    await session.commit_audio()
    done = await (await session.create_response()).done
    assert done.status == "completed" and pre.used == 1 and pre.dropped == 0
    assert spoken_replies(log) == ["You said: Please turn on the kitchen lights."]
    assert tts.texts.count("You said:") == 1  # the first clause was synthesised once, ahead


async def test_a_changed_final_never_reaches_the_caller_or_the_conversation(call: Call) -> None:
    session, log, _ = call
    pre = session.preemption
    assert pre is not None
    await push(session, concat(speak(LIGHTS), silence(0.35)))
    await log.wait_for(UserTranscript, lambda e: not e.final and "lights" in words(e.text))
    assert pre.started == 1  # speculating on "...kitchen lights."
    await push(session, speak("Tell me a joke."))  # ...but the caller went on
    await session.commit_audio()
    done = await (await session.create_response()).done
    assert done.status == "completed" and pre.used == 0 and pre.dropped == 1
    replies = spoken_replies(log)
    assert len(replies) == 1 and "joke" in words(replies[0]), replies
    # Every sample sent belongs to the one reply, and the conversation holds one answer.
    assert {e.response_id for e in log.of(AudioDelta)} == {done.response_id}
    added = [e.item for e in log.of(ItemAdded) if isinstance(e.item, Message)]
    assert [m.role for m in added] == ["user", "assistant"]
    assert [m.role for m in session.conversation.items] == ["user", "assistant"]
    assert "joke" in words(session.conversation.items[1].text)  # type: ignore[union-attr]


async def test_preemption_can_be_turned_off(stt: WhisperSTT, piper: PiperTTS) -> None:
    backend = CascadeBackend(stt, EchoLLM(), piper, preemptive_generation=False)
    session = await backend.connect(instructions="", tools=[], conversation=Conversation())
    try:
        assert session.preemption is None
    finally:
        await session.aclose()
