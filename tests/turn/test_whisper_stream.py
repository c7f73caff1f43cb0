"""WhisperSTT streaming: each piece of speech transcribed once, finals on their own lane."""

from __future__ import annotations

import asyncio
import threading

import pytest

from duplex.agents.audio import AudioFrame
from duplex.plugins.whisper import WhisperSTT
from duplex.plugins.whisper.model import transcribe_clip
from duplex.plugins.whisper.worker import Lanes

from ..cascade.helpers import words
from ..speech import concat, silence, speak, split

PHRASES = (
    "Please turn on the kitchen lights.",
    "What is the weather like in Paris today?",
    "I would like to order a large pizza.",
)


@pytest.fixture(scope="module")
def stt() -> WhisperSTT:
    return WhisperSTT(lanes=Lanes())


async def feed(utt: object, audio: AudioFrame) -> None:
    for frame in split(audio, 20):
        await utt.push(frame)  # type: ignore[attr-defined]


async def test_final_equals_a_whole_utterance_transcription(stt: WhisperSTT) -> None:
    session = await stt.connect()
    for text in PHRASES:
        speech = speak(text)
        utt = session.begin()
        await feed(utt, concat(silence(0.2), speech, silence(0.3)))
        streamed = await utt.finish()
        # The same decoder over the whole utterance at once (what streaming must not change).
        whole = await asyncio.to_thread(transcribe_clip, stt.model, speech.to_float()[:, 0])
        assert words(streamed) == words(whole), (streamed, whole)


async def test_transcribed_audio_grows_linearly_with_the_utterance(stt: WhisperSTT) -> None:
    session = await stt.connect()
    sentence = speak("I would like to book a table for two people tonight.")
    ratios = []
    for repeats in (1, 2, 4):
        # Sentences separated by short pauses, as a long turn is spoken.
        audio = concat(*[concat(sentence, silence(0.25)) for _ in range(repeats)])
        utt = session.begin()
        await feed(utt, audio)
        await utt.finish()
        ratios.append(utt.samples_transcribed / audio.samples_per_channel)  # type: ignore[attr-defined]
    # Re-transcribing the growing buffer would pass ~repeats times more audio per sample.
    # Pieces are transcribed once; previews add at most ~one piece per second of tail.
    assert max(ratios) <= 3.0, ratios


async def test_long_unbroken_speech_is_cut_into_bounded_pieces() -> None:
    stt = WhisperSTT(lanes=Lanes(), max_piece_s=2.0, settle_ms=10_000, interim_every_s=None)
    session = await stt.connect()
    audio = speak("I would like to book a table for two people tonight at seven please.")
    partials: list[str] = []
    three = asyncio.Event()

    def on_partial(text: str) -> None:
        partials.append(text)
        if len(partials) >= 3:
            three.set()

    utt = session.begin(on_partial)
    await feed(utt, concat(audio, audio))
    await asyncio.wait_for(three.wait(), 60)  # pieces settled while "speaking", no pause needed
    text = await utt.finish()
    assert utt.samples_transcribed <= audio.samples_per_channel * 2  # type: ignore[attr-defined]
    assert {"table", "people", "seven"} <= set(words(text))


async def test_a_final_pass_never_waits_behind_other_calls_background_work() -> None:
    lanes = Lanes()
    stt = WhisperSTT(lanes=lanes)
    session = await stt.connect()
    release = threading.Event()
    # Another call's background work holds the background lane until released.
    blocker = lanes.background(lambda: release.wait(60))
    try:
        utt = session.begin()
        await feed(utt, concat(speak(PHRASES[0]), silence(0.3)))  # a piece queues behind it
        assert lanes.background_pending == 2
        text = await asyncio.wait_for(utt.finish(), 60)
        assert not blocker.done()  # finished while the other call's work still held its lane
        assert {"kitchen", "lights"} <= set(words(text))
        assert lanes.background_pending == 1  # the queued piece was withdrawn, not run twice
    finally:
        release.set()
    assert await asyncio.wrap_future(blocker)
