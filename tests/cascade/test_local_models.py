"""The offline stages with their real models: Whisper tiny.en (streaming) and Piper joe-medium."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from duplex.agents.errors import AudioFormatError
from duplex.backends.cascade import STTOverflowError
from duplex.plugins.piper import PiperTTS
from duplex.plugins.whisper import WhisperSTT

from ..speech import concat, silence, speak, split
from .helpers import hear, words
from .vllm_server import Transcriber

LIGHTS = "Please turn on the kitchen lights."


async def test_piper_speaks_in_small_frames(piper: PiperTTS, transcriber: Transcriber) -> None:
    frames = [f async for f in piper.synthesize("I would like to order a pizza.")]
    assert piper.sample_rate == 22050 and {f.sample_rate for f in frames} == {22050}
    assert max(f.duration_ms for f in frames) <= 40.5 and len(frames) > 20
    assert {"order", "pizza"} <= set(words(hear(transcriber, frames)))


async def test_piper_stream_closed_early_stops_cleanly(piper: PiperTTS) -> None:
    stream = piper.synthesize("One sentence. And another one that nobody will hear.")
    first = await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    assert first.sample_rate == 22050


async def feed(utt, audio) -> None:  # type: ignore[no-untyped-def]
    for frame in split(audio, 20):
        await utt.push(frame)


async def test_whisper_transcribes_while_speaking_so_the_final_is_quick(
    whisper_stt: WhisperSTT,
) -> None:
    session = await whisper_stt.connect()
    partial = asyncio.Event()
    partials: list[str] = []

    def on_partial(text: str) -> None:
        partials.append(text)
        if "lights" in words(text):
            partial.set()

    utt = session.begin(on_partial)
    # The pause after the words settles them: they are transcribed before the turn ends.
    await feed(utt, concat(speak(LIGHTS), silence(0.3)))
    await asyncio.wait_for(partial.wait(), 20)
    text = await utt.finish()
    assert {"kitchen", "lights"} <= set(words(text))
    assert utt.reused_pass  # nothing was left to transcribe at the end
    assert utt.final_latency_s is not None
    print(f"\nwhisper final latency with streaming: {1000 * utt.final_latency_s:.1f} ms")


async def test_whisper_transcribes_words_after_the_last_pause(whisper_stt: WhisperSTT) -> None:
    session = await whisper_stt.connect()
    seen = asyncio.Event()
    utt = session.begin(lambda text: seen.set())
    await feed(utt, concat(speak(LIGHTS), silence(0.3)))
    await asyncio.wait_for(seen.wait(), 20)
    await feed(utt, speak("Tell me a joke."))  # speech after the pause: it must not be lost
    text = await utt.finish()
    assert not utt.reused_pass
    assert {"lights", "joke"} <= set(words(text))
    assert utt.final_latency_s is not None
    print(f"\nwhisper final latency with a final pass: {1000 * utt.final_latency_s:.1f} ms")


async def test_whisper_limits_and_formats(whisper_stt: WhisperSTT) -> None:
    stt = WhisperSTT(max_utterance_s=1.0)
    utt = (await stt.connect()).begin()
    with pytest.raises(AudioFormatError):
        await utt.push(silence(0.1, 24000))
    await utt.push(silence(1.0))
    with pytest.raises(STTOverflowError):
        await utt.push(silence(0.1))
    await utt.cancel()


async def test_piper_audio_starts_with_speech(piper: PiperTTS) -> None:
    for text in ("Hi.", "You said:", "I would like to order a pizza."):
        frames = [f async for f in piper.synthesize(text)]
        pcm = np.concatenate([f.data[:, 0] for f in frames]).astype(np.int32)
        onset = int(np.flatnonzero(np.abs(pcm) > 0.01 * 32768)[0])
        # Piper alone starts with ~30-60 ms of silence; a few ms of lead-in are kept.
        assert 1000 * onset / piper.sample_rate <= 8.0, text
