"""Faults across the cascade, and the VLLMRealtime assembly against vLLM-protocol servers."""

from __future__ import annotations

import pytest

from duplex.agents.backend import AudioDelta, BackendError, ItemAdded, ItemDeleted, UserTranscript
from duplex.agents.conversation import Conversation, Message
from duplex.agents.errors import ConfigurationError
from duplex.backends.cascade import CascadeBackend, EchoLLM, SpeechEndpointTTS
from duplex.backends.vllm import VLLMRealtime, VLLMRealtimeSTT
from duplex.plugins.piper import PiperTTS
from duplex.plugins.whisper import WhisperSTT

from ..speech import concat, silence, speak
from .chat_server import ChatServer, Text
from .helpers import EventLog, hear, say, words
from .speech_server import SpeechServer
from .vllm_server import Transcriber, VLLMRealtimeServer

MODEL = "mistralai/Voxtral-Mini-4B-Realtime-2602"
LIGHTS = "Please turn on the kitchen lights."


async def test_tts_failure_fails_the_reply_and_leaves_no_unheard_text(
    speech_server: SpeechServer, whisper_stt: WhisperSTT
) -> None:
    tts = SpeechEndpointTTS(speech_server.url, sample_rate=22050, server_rate=speech_server.rate)
    backend = CascadeBackend(whisper_stt, EchoLLM(), tts)
    s = await backend.connect(instructions="", tools=[], conversation=Conversation())
    log = EventLog(s)
    try:
        speech_server.fail_next = 1
        await say(s, concat(speak(LIGHTS), silence(0.3)))
        done = await (await s.create_response()).done
        assert done.status == "failed" and "TTS engine failed" in (done.error or "")
        err = await log.wait_for(BackendError)
        assert err.code == "http_500" and err.recoverable
        deleted = await log.wait_for(ItemDeleted)
        assert [it.role for it in s.conversation if isinstance(it, Message)] == ["user"]
        assert deleted.item_id not in s.conversation
        again = await (await s.create_response()).done  # the next reply speaks again
        assert again.status == "completed" and log.of(AudioDelta)
    finally:
        await s.aclose()
        await log.aclose()
        await backend.aclose()


async def test_stt_socket_drop_inside_a_turn_loses_no_words(
    vllm_server: VLLMRealtimeServer, piper: PiperTTS, transcriber: Transcriber
) -> None:
    vllm_server.drop_after_appends = 20  # the call's socket dies 400 ms into the turn
    backend = CascadeBackend(VLLMRealtimeSTT(vllm_server.url, MODEL), EchoLLM(), piper)
    s = await backend.connect(instructions="", tools=[], conversation=Conversation())
    log = EventLog(s)
    try:
        await say(s, concat(speak(LIGHTS), silence(0.3)))
        done = await (await s.create_response()).done
        assert done.status == "completed"
        user = (await log.wait_for(ItemAdded)).item
        assert {"kitchen", "lights"} <= set(words(user.text))  # type: ignore[union-attr]
        assert len(vllm_server.connections) == 2
        heard = hear(transcriber, [log.audio(done.response_id)])
        assert {"you", "said", "kitchen", "lights"} <= set(words(heard))
        assert log.of(UserTranscript)[-1].final
    finally:
        await s.aclose()
        await log.aclose()
        await backend.aclose()


async def test_vllm_realtime_assembles_the_three_endpoints(
    vllm_server: VLLMRealtimeServer,
    chat_server: ChatServer,
    speech_server: SpeechServer,
    transcriber: Transcriber,
) -> None:
    chat_server.script(Text("The lights are on now."))
    backend = VLLMRealtime(
        "http://127.0.0.1:1",  # the shared base; each stage below overrides it
        MODEL,
        "Qwen/Qwen3-8B",
        stt_url=vllm_server.url,
        llm_url=chat_server.url,
        tts_url=speech_server.url,
        tts_transport="websocket",
    )
    assert backend.capabilities.input_sample_rate == 16000
    assert backend.capabilities.output_sample_rate == 24000
    s = await backend.connect(instructions="Be brief.", tools=[], conversation=Conversation())
    log = EventLog(s)
    try:
        await say(s, concat(speak(LIGHTS), silence(0.3)))
        done = await (await s.create_response()).done
        assert done.status == "completed"
        assert vllm_server.connections[0].events[0] == {"type": "session.update", "model": MODEL}
        assert chat_server.requests[0].body["model"] == "Qwen/Qwen3-8B"
        assert "kitchen" in words(chat_server.requests[0].body["messages"][1]["content"])
        audio = log.audio(done.response_id)
        assert audio.sample_rate == 24000
        assert {"lights", "on"} <= set(words(hear(transcriber, [audio])))
    finally:
        await s.aclose()
        await log.aclose()
        await backend.aclose()


def test_vllm_realtime_needs_a_chat_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DUPLEX_LLM_MODEL", raising=False)
    with pytest.raises(ConfigurationError, match="llm_model"):
        VLLMRealtime("http://127.0.0.1:8000")
