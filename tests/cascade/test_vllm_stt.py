"""VLLMRealtimeSTT against a server that behaves like vLLM's /v1/realtime (real Whisper inside)."""

from __future__ import annotations

import asyncio
import base64
import json
import traceback

import aiohttp
import numpy as np
import pytest

from duplex.agents.errors import ConfigurationError
from duplex.backends.cascade import STTError, STTOverflowError
from duplex.backends.vllm import VLLMRealtimeSTT

from ..speech import silence, speak, split
from .helpers import words
from .vllm_server import Transcriber, VLLMRealtimeServer

MODEL = "mistralai/Voxtral-Mini-4B-Realtime-2602"
WEATHER = "What is the weather in Paris today?"


async def push_all(utt, audio, ms: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    for frame in split(audio, ms):
        await utt.push(frame)


async def test_streams_while_speaking_and_reuses_one_connection(
    vllm_server: VLLMRealtimeServer,
) -> None:
    stt = VLLMRealtimeSTT(vllm_server.url, MODEL)
    session = await stt.connect()
    partials: list[str] = []
    try:
        utt = session.begin(partials.append)
        await push_all(utt, speak(WEATHER))
        # Audio reaches the server while the caller is still "speaking" (before finish).
        await asyncio.wait_for(vllm_server.first_append.wait(), 5)
        assert vllm_server.connections[0].appends > 0
        first = await utt.finish()
        assert {"weather", "paris"} <= set(words(first))
        assert partials and partials[-1] == first  # cumulative partials end on the final text
        second_utt = session.begin()
        await push_all(second_utt, speak("Book a table for two people."))
        second = await second_utt.finish()
        assert {"table", "two"} <= set(words(second))
    finally:
        await session.aclose()
        await stt.aclose()
    assert len(vllm_server.connections) == 1
    events = vllm_server.connections[0].events
    assert events[0] == {"type": "session.update", "model": MODEL}  # model at the top level
    assert events[1] == {"type": "duplex.probe"}  # answered by unknown_event: the model is served
    kinds = [
        (e["type"], e.get("final")) for e in events[2:] if e["type"] != "input_audio_buffer.append"
    ]
    commit, final = ("input_audio_buffer.commit", None), ("input_audio_buffer.commit", True)
    assert kinds == [commit, final, commit, final]
    # Each utterance's audio went to its own generation, none lost after `done`.
    assert len(vllm_server.connections[0].generations) == 2
    assert vllm_server.connections[0].dropped_samples == 0


async def test_socket_drop_mid_utterance_resends_the_whole_utterance(
    vllm_server: VLLMRealtimeServer,
) -> None:
    speech = speak(WEATHER)
    vllm_server.drop_after_appends = 10  # the socket dies 200 ms into the utterance
    stt = VLLMRealtimeSTT(vllm_server.url, MODEL)
    session = await stt.connect()
    try:
        utt = session.begin()
        await push_all(utt, speech)
        text = await utt.finish()
    finally:
        await session.aclose()
        await stt.aclose()
    assert {"weather", "paris"} <= set(words(text))
    assert session.reconnects == 1 and len(vllm_server.connections) == 2
    resent = vllm_server.connections[1].generations[0]
    assert np.array_equal(resent, speech.data[:, 0])  # every sample, from the first one


async def test_unknown_model_fails_at_connect_with_a_configuration_error(
    vllm_server: VLLMRealtimeServer,
) -> None:
    stt = VLLMRealtimeSTT(vllm_server.url, "no/such-model")
    with pytest.raises(ConfigurationError, match="no/such-model"):
        await stt.connect()  # before any caller turn
    await stt.aclose()
    assert "model_not_found" in [e.get("code") for e in vllm_server.connections[0].sent]


def test_session_extra_cannot_replace_the_model() -> None:
    with pytest.raises(ConfigurationError, match="model"):
        VLLMRealtimeSTT("http://127.0.0.1:1", MODEL, session_extra={"model": "other"})
    with pytest.raises(ConfigurationError, match="temperature"):
        VLLMRealtimeSTT("http://127.0.0.1:1", MODEL, session_extra={"temperature": 0.2})


async def test_session_extra_fields_go_beside_the_model(vllm_server: VLLMRealtimeServer) -> None:
    stt = VLLMRealtimeSTT(vllm_server.url, MODEL, session_extra={"language": "en"})
    session = await stt.connect()
    await session.aclose()
    await stt.aclose()
    update = vllm_server.connections[0].events[0]
    assert update == {"type": "session.update", "model": MODEL, "language": "en"}


async def test_engine_failure_fails_the_turn_and_the_next_turn_works(
    vllm_server: VLLMRealtimeServer,
) -> None:
    vllm_server.fail_next_generation = True
    stt = VLLMRealtimeSTT(vllm_server.url, MODEL)
    session = await stt.connect()
    try:
        utt = session.begin()
        await push_all(utt, speak("Tell me a joke."))
        with pytest.raises(STTError) as err:
            await utt.finish()
        assert err.value.code == "processing_error" and err.value.recoverable
        utt = session.begin()
        await push_all(utt, speak(WEATHER))
        assert "paris" in words(await utt.finish())
    finally:
        await session.aclose()
        await stt.aclose()


async def test_queued_audio_is_bounded_with_a_typed_error(vllm_server: VLLMRealtimeServer) -> None:
    stt = VLLMRealtimeSTT(vllm_server.url, MODEL, max_utterance_s=2.0)
    session = await stt.connect()
    try:
        utt = session.begin()
        speech = speak(WEATHER)  # ~2 s: the padding pushes it over
        await push_all(utt, speech)
        with pytest.raises(STTOverflowError):
            await utt.push(silence(0.5))
        text = await utt.finish()  # what was accepted still gets transcribed
        assert "weather" in words(text)
    finally:
        await session.aclose()
        await stt.aclose()


async def test_unreachable_server_fails_at_connect() -> None:
    stt = VLLMRealtimeSTT("http://127.0.0.1:9", MODEL)
    with pytest.raises(STTError) as err:
        await stt.connect()
    assert err.value.code == "stt_unreachable"
    await stt.aclose()


async def test_bad_key_is_an_auth_error_and_never_retried(transcriber: Transcriber) -> None:
    server = await VLLMRealtimeServer(transcriber, api_key="right-key").start()
    try:
        stt = VLLMRealtimeSTT(server.url, MODEL, api_key="wrong-key")
        with pytest.raises(STTError) as err:
            await stt.connect()
        assert (err.value.code, err.value.recoverable) == ("stt_auth", False)
        exc: BaseException | None = err.value
        while exc is not None:  # nothing chained leads back to the request's headers
            assert "wrong-key" not in repr(exc) + repr(getattr(exc, "request_info", ""))
            exc = exc.__cause__ or exc.__context__
        shown = traceback.TracebackException.from_exception(err.value, capture_locals=True)
        assert "wrong-key" not in "".join(shown.format()) and "wrong-key" not in repr(stt)
        assert server.handshakes == 1 and not server.connections  # refused once, not retried
        await stt.aclose()
        good = VLLMRealtimeSTT(server.url, MODEL, api_key="right-key")
        session = await good.connect()
        await session.aclose()
        await good.aclose()
        assert len(server.connections) == 1
    finally:
        await server.stop()


# --- the test server itself reproduces vLLM's quirks ----------------------------------------
async def _recv(ws: aiohttp.ClientWebSocketResponse) -> dict:  # type: ignore[type-arg]
    msg = await asyncio.wait_for(ws.receive(), 10)
    assert msg.type == aiohttp.WSMsgType.TEXT
    return json.loads(msg.data)  # type: ignore[no-any-return]


def _b64(pcm: bytes) -> str:
    return base64.b64encode(pcm).decode()


async def test_server_quirks(vllm_server: VLLMRealtimeServer) -> None:
    url = vllm_server.url + "/v1/realtime"
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        created = await _recv(ws)
        assert created["type"] == "session.created" and created["id"].startswith("sess-")
        await ws.send_json({"type": "input_audio_buffer.commit"})
        assert await _recv(ws) == {
            "type": "error",
            "error": "Model not validated; send session.update first",
            "code": "model_not_validated",
        }
        await ws.send_json({"type": "session.update"})
        err = await _recv(ws)
        assert (err["code"], isinstance(err["error"], str)) == ("invalid_event", True)
        await ws.send_json({"type": "session.update", "model": "gpt-4o"})
        assert (await _recv(ws))["code"] == "model_not_found"
        await ws.send_json({"type": "session.update", "model": MODEL})
        # No session.updated: the next thing we hear is the answer to the next event.
        await ws.send_json({"type": "input_audio_buffer.clear"})
        assert (await _recv(ws))["code"] == "unknown_event"
        for bad in ("not base64!", "", _b64(b"\x01\x02\x03")):
            await ws.send_json({"type": "input_audio_buffer.append", "audio": bad})
            assert (await _recv(ws))["code"] == "invalid_audio"
        speech = speak("What time is it?").to_pcm16()
        await ws.send_json({"type": "input_audio_buffer.commit"})
        await ws.send_json({"type": "input_audio_buffer.commit"})  # ignored: generation running
        await ws.send_json({"type": "input_audio_buffer.append", "audio": _b64(speech)})
        await ws.send_json({"type": "input_audio_buffer.commit", "final": True})
        await ws.send_json({"type": "input_audio_buffer.append", "audio": _b64(speech)})  # lost
        text = ""
        while True:
            ev = await _recv(ws)
            if ev["type"] == "transcription.delta":
                text += ev["delta"]
            else:
                break
        assert ev["type"] == "transcription.done" and ev["text"] == text
        assert {"what", "time"} <= set(words(text))
        assert set(ev["usage"]) == {
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
            "prompt_tokens_details",
        }
    conn = vllm_server.connections[0]
    assert len(conn.generations) == 1 and conn.generations[0].size == len(speech) // 2
    assert conn.dropped_samples == len(speech) // 2
