"""SpeechEndpointTTS against a vLLM-Omni-style speech server that speaks with Piper."""

from __future__ import annotations

import pytest

from duplex.backends.cascade import SpeechEndpointTTS, TTSError

from .helpers import hear, words
from .speech_server import SpeechServer
from .vllm_server import Transcriber

SENTENCE = "Please turn on the kitchen lights."


async def speak_all(tts: SpeechEndpointTTS, text: str) -> list:  # type: ignore[type-arg]
    try:
        return [f async for f in tts.synthesize(text)]
    finally:
        await tts.aclose()


@pytest.mark.parametrize("stream_format", ["audio", "sse"])
async def test_http_stream_is_resampled_to_the_declared_rate(
    speech_server: SpeechServer, transcriber: Transcriber, stream_format: str
) -> None:
    tts = SpeechEndpointTTS(
        speech_server.url,
        "Qwen/Qwen3-TTS",
        voice="vivian",
        sample_rate=24000,
        server_rate=speech_server.rate,
        extra_body={"stream_format": stream_format},
    )
    frames = await speak_all(tts, SENTENCE)
    assert len(frames) > 5 and {f.sample_rate for f in frames} == {24000}
    expected_s = speech_server.log.sent[0] / 2 / speech_server.rate
    assert abs(sum(f.duration for f in frames) - expected_s) < 0.005
    assert {"kitchen", "lights"} <= set(words(hear(transcriber, frames)))
    body = speech_server.log.http[0]
    assert body["response_format"] == "pcm" and body["stream"] is True and body["input"] == SENTENCE
    assert body["voice"] == "vivian" and body["model"] == "Qwen/Qwen3-TTS"


async def test_websocket_stream_uses_the_announced_rate(
    speech_server: SpeechServer, transcriber: Transcriber
) -> None:
    # server_rate is left at 24000: the rate in audio.start (22050) must win.
    tts = SpeechEndpointTTS(speech_server.url, transport="websocket", sample_rate=24000)
    frames = await speak_all(tts, SENTENCE)
    assert {f.sample_rate for f in frames} == {24000}
    expected_s = speech_server.log.sent[0] / 2 / speech_server.rate
    assert abs(sum(f.duration for f in frames) - expected_s) < 0.005
    assert {"kitchen", "lights"} <= set(words(hear(transcriber, frames)))
    kinds = [e["type"] for e in speech_server.log.ws[0]]
    assert kinds == ["session.config", "input.text", "input.done", "session.close"]
    config = speech_server.log.ws[0][0]
    assert config["response_format"] == "pcm" and config["stream_audio"] is True


@pytest.mark.parametrize("transport", ["http", "websocket"])
async def test_server_failure_is_a_typed_error(speech_server: SpeechServer, transport: str) -> None:
    speech_server.fail_next = 1
    tts = SpeechEndpointTTS(speech_server.url, transport=transport)  # type: ignore[arg-type]
    with pytest.raises(TTSError, match="TTS engine failed"):
        await speak_all(tts, SENTENCE)


async def test_unreachable_server_is_a_typed_error() -> None:
    with pytest.raises(TTSError) as err:
        await speak_all(SpeechEndpointTTS("http://127.0.0.1:9"), SENTENCE)
    assert err.value.code == "tts_unreachable"
