"""Faults across the cascade, and the VLLMRealtime assembly against vLLM-protocol servers."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
from pathlib import Path

import aiohttp
import pytest

from duplex.agents.backend import AudioDelta, BackendError, ItemAdded, ItemDeleted, UserTranscript
from duplex.agents.conversation import Conversation, Message
from duplex.agents.errors import ConfigurationError
from duplex.backends.cascade import CascadeBackend, EchoLLM, SpeechEndpointTTS, STTError
from duplex.backends.vllm import VLLMRealtime, VLLMRealtimeSTT, VLLMRealtimeSTTSession
from duplex.plugins.piper import PiperTTS
from duplex.plugins.whisper import WhisperSTT

from ..speech import concat, silence, speak, split
from .chat_server import ChatServer, Text
from .helpers import EventLog, hear, say, words
from .speech_server import SpeechServer
from .vllm_server import Transcriber, VLLMRealtimeServer

MODEL = "mistralai/Voxtral-Mini-4B-Realtime-2602"
LIGHTS = "Please turn on the kitchen lights."
WEATHER = "What is the weather in Paris today?"


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


# --- the STT connection against what a real vLLM does ---------------------------------------
async def _turn(session: VLLMRealtimeSTTSession, text: str = LIGHTS) -> str:
    utt = session.begin()
    for frame in split(speak(text), 20.0):
        await utt.push(frame)
    return await asyncio.wait_for(utt.finish(), 30)


async def test_the_test_server_closes_a_client_that_never_answers_pings(
    transcriber: Transcriber,
) -> None:
    server = await VLLMRealtimeServer(transcriber, ping_interval=0.1, ping_timeout=0.1).start()
    try:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(server.url + "/v1/realtime", autoping=False)
            await server.wait_until(lambda: any(c.keepalive_closed for c in server.connections))
            await ws.close()
    finally:
        await server.stop()


async def test_an_idle_pause_costs_no_reconnect_and_no_warning(
    transcriber: Transcriber, caplog: pytest.LogCaptureFixture
) -> None:
    # uvicorn's 20 s ping / 20 s timeout, shortened 100x: a 45 s pause is 0.45 s here.
    server = await VLLMRealtimeServer(transcriber, ping_interval=0.2, ping_timeout=0.2).start()
    stt = VLLMRealtimeSTT(server.url, MODEL)
    caplog.set_level(logging.WARNING, logger="duplex.backends.vllm")
    try:
        session = await stt.connect()
        assert "kitchen" in words(await _turn(session))
        conn = server.connections[0]
        await server.wait_until(lambda: conn.pongs >= 5)  # > 45 s of uvicorn time, idle
        assert "kitchen" in words(await _turn(session))
        await session.aclose()
    finally:
        await stt.aclose()
        await server.stop()
    assert session.reconnects == 0 and len(server.connections) == 1
    assert not conn.keepalive_closed
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_black_holed_server_is_detected_by_the_heartbeat(
    vllm_server: VLLMRealtimeServer,
) -> None:
    vllm_server.deaf_next = True  # the first connection swallows our pings
    stt = VLLMRealtimeSTT(vllm_server.url, MODEL, heartbeat_s=0.2)
    session = await stt.connect()
    try:
        await vllm_server.wait_until(lambda: len(vllm_server.connections) == 1)
        text = await _turn(session)  # the dead link is replaced; the words arrive
    finally:
        await session.aclose()
        await stt.aclose()
    assert "kitchen" in words(text)
    assert len(vllm_server.connections) == 2


async def test_a_cancelled_utterance_frees_the_connection_at_once(
    vllm_server: VLLMRealtimeServer,
) -> None:
    vllm_server.stall_next_generation = True  # its done would never come
    stt = VLLMRealtimeSTT(vllm_server.url, MODEL, final_timeout=600)
    session = await stt.connect()
    try:
        utt = session.begin()
        for frame in split(speak("never mind"), 20.0):
            await utt.push(frame)
        await asyncio.wait_for(vllm_server.first_append.wait(), 10)
        await utt.cancel()
        # The next turn does not queue behind the stalled generation (600 s).
        assert "kitchen" in words(await _turn(session))
    finally:
        await session.aclose()
        await stt.aclose()
    assert session.reconnects == 0  # a fresh connection for a cancel is not a failure


async def test_garbage_frames_mid_utterance_are_skipped_and_the_worker_lives(
    vllm_server: VLLMRealtimeServer,
) -> None:
    garbage = [
        '"hello"',
        "[1]",
        "null",
        "{not json",
        '{"type": 5}',
        '{"type": "transcription.delta", "delta": 7}',
        '{"type": "transcription.delta"}',
        '{"type": "error", "error": {"nested": 1}, "code": ["x"]}',
        "[" * 100_000 + "]" * 100_000,  # deeper than the JSON parser's recursion limit
        '{"type": "bogus.event"}',
    ]
    vllm_server.inject_next = list(garbage)
    stt = VLLMRealtimeSTT(vllm_server.url, MODEL)
    session = await stt.connect()
    try:
        first = await _turn(session)
        second = await _turn(session, WEATHER)
    finally:
        await session.aclose()
        await stt.aclose()
    assert "kitchen" in words(first) and "paris" in words(second)
    assert session.anomalies.total == len(garbage)  # each one counted (and warned once)
    assert len(vllm_server.connections) == 1


async def test_a_bad_first_frame_on_reconnect_is_retried(vllm_server: VLLMRealtimeServer) -> None:
    vllm_server.drop_after_appends = 5  # the first connection drops mid-utterance
    stt = VLLMRealtimeSTT(vllm_server.url, MODEL)
    session = await stt.connect()
    vllm_server.bad_first_frames = ["null", '{"type": "transcription.done"}']
    try:
        text = await _turn(session)
    finally:
        await session.aclose()
        await stt.aclose()
    assert "kitchen" in words(text)
    assert len(vllm_server.connections) == 4 and session.reconnects == 1


async def test_an_outage_longer_than_the_window_is_one_typed_error(
    vllm_server: VLLMRealtimeServer,
) -> None:
    stt = VLLMRealtimeSTT(vllm_server.url, MODEL, reconnect_window_s=0.3)
    session = await stt.connect()
    vllm_server.drop_after_appends = 3
    try:
        utt = session.begin()
        for frame in split(speak(LIGHTS), 20.0):
            await utt.push(frame)
        await asyncio.wait_for(vllm_server.first_append.wait(), 10)
        await vllm_server.stop()  # and it stays down
        with pytest.raises(STTError) as err:
            await asyncio.wait_for(utt.finish(), 10)
        assert err.value.code == "stt_connection_lost" and err.value.recoverable
    finally:
        await session.aclose()
        await stt.aclose()


async def test_an_engine_failure_is_one_error_event(
    vllm_server: VLLMRealtimeServer, piper: PiperTTS
) -> None:
    vllm_server.fail_next_generation = True
    backend = CascadeBackend(VLLMRealtimeSTT(vllm_server.url, MODEL), EchoLLM(), piper)
    s = await backend.connect(instructions="", tools=[], conversation=Conversation())
    log = EventLog(s)
    try:
        await say(s, concat(speak(LIGHTS), silence(0.3)))
        err = await log.wait_for(BackendError)
        assert err.code == "processing_error" and err.recoverable
        await say(s, concat(speak(WEATHER), silence(0.3)))
        user = await log.wait_for(
            ItemAdded, lambda e: "paris" in words(getattr(e.item, "text", ""))
        )
        assert user.item.role == "user"  # type: ignore[union-attr]
    finally:
        await s.aclose()
        await log.aclose()
        await backend.aclose()
    assert len(log.of(BackendError)) == 1


# --- a vLLM restart: the server process is killed and started again mid-utterance ------------
class ServerProcess:
    """tests/cascade/vllm_server.py as a process on a fixed port; reads its JSON report lines."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[dict[str, object]] = []
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def start(self) -> None:
        self.lines = []
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.cascade.vllm_server",
            "--port",
            str(self.port),
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        self._reader = asyncio.create_task(self._read(self.proc))
        await self.wait_for("ready", timeout=120)

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            self.lines.append(json.loads(line))
            self._changed.set()

    async def wait_for(self, key: str, timeout: float = 30) -> dict[str, object]:
        async def scan() -> dict[str, object]:
            while True:
                self._changed.clear()
                for line in self.lines:
                    if key in line:
                        return line
                await self._changed.wait()

        return await asyncio.wait_for(scan(), timeout)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()  # SIGKILL: no close frame, like a crashed or OOM-killed vLLM
            await self.proc.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


ROOT = str(Path(__file__).resolve().parents[2])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_utterance_survives_a_vllm_restart() -> None:
    server = ServerProcess(_free_port())
    await server.start()
    stt = VLLMRealtimeSTT(f"http://127.0.0.1:{server.port}", MODEL)
    partials: list[str] = []
    try:
        session = await stt.connect()
        speech = concat(speak(LIGHTS), silence(0.2))
        frames = split(speech, 20.0)
        half = len(frames) // 2
        utt = session.begin(partials.append)
        for frame in frames[:half]:
            await utt.push(frame)
        await server.wait_for("append")
        await server.kill()  # mid-utterance
        for frame in frames[half:]:
            await utt.push(frame)  # the caller keeps talking while vLLM is down
        final = asyncio.ensure_future(utt.finish())
        await server.start()  # a new process: it knows nothing of the first one
        text = await asyncio.wait_for(final, 60)
        generations = [line["generation"] for line in server.lines if "generation" in line]
        await session.aclose()
    finally:
        await stt.aclose()
        await server.kill()
    assert {"kitchen", "lights"} <= set(words(text))
    assert words(text).count("kitchen") == 1  # nothing duplicated
    assert generations == [speech.samples_per_channel]  # every sample, once, on the new process
    assert session.reconnects == 1
    assert all(words(p).count("kitchen") <= 1 for p in partials)


def test_vllm_realtime_passes_the_stt_connection_settings() -> None:
    backend = VLLMRealtime(
        "http://127.0.0.1:8000",
        MODEL,
        "Qwen/Qwen3-8B",
        tts=SpeechEndpointTTS("http://127.0.0.1:1"),
        stt_reconnect_window_s=12.0,
        stt_final_timeout=7.0,
        stt_max_utterance_s=20.0,
        stt_session_extra={"language": "en"},
    )
    stt = backend.stt
    assert isinstance(stt, VLLMRealtimeSTT)
    assert (stt.reconnect_window_s, stt.final_timeout, stt.max_utterance_s) == (12.0, 7.0, 20.0)
    assert stt.session_extra == {"language": "en"}
    with pytest.raises(ConfigurationError, match="model"):
        VLLMRealtime(
            "http://127.0.0.1:8000",
            MODEL,
            "Qwen/Qwen3-8B",
            tts=SpeechEndpointTTS("http://127.0.0.1:1"),
            stt_session_extra={"model": "other"},
        )
