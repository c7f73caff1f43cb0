"""`SessionRecorder`: both voices in the WAV where they were heard; the JSON is the conversation."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from duplex.agents import (
    AgentInterrupted,
    AgentSession,
    AgentStateChanged,
    EnergyVAD,
    Message,
    MetricsCollected,
    TurnOptions,
)
from duplex.agents.audio import AudioFrame
from duplex.agents.recorder import SessionRecorder, item_from_json
from duplex.agents.testing import MemoryTransport, Reply, ScriptedBackend, tone
from tests.test_logs import Lookup

TURN = TurnOptions(threshold=0.5, prefix_padding_ms=100, silence_duration_ms=200, min_speech_ms=60)
RATE = 24000
TOLERANCE_MS = 60.0


async def speak_live(transport: MemoryTransport, parts: list[AudioFrame]) -> float:
    """Push caller audio as a microphone would: each 20 ms frame when it has been spoken.

    Returns the monotonic time the first frame started.
    """
    audio = AudioFrame.concat(parts)
    n = round(0.02 * audio.sample_rate)
    t0 = time.monotonic()
    for k, start in enumerate(range(0, len(audio.data), n)):
        await asyncio.sleep(max(0.0, t0 + (k + 1) * 0.02 - time.monotonic()))
        transport.audio_input.push(AudioFrame(audio.data[start : start + n], audio.sample_rate))
    return t0


def onset_ms(channel: np.ndarray, after_ms: float = 0.0) -> float:
    start = round(after_ms * RATE / 1000)
    loud = np.flatnonzero(np.abs(channel[start:].astype(np.int32)) > 1000)
    assert loud.size, "no audio in this channel"
    return 1000.0 * (start + loud[0]) / RATE


def active_ms(channel: np.ndarray) -> float:
    loud = np.flatnonzero(np.abs(channel.astype(np.int32)) > 1000)
    return 1000.0 * (loud[-1] - loud[0]) / RATE if loud.size else 0.0


def peak_hz(channel: np.ndarray, at_ms: float, ms: float = 100.0) -> float:
    i = round(at_ms * RATE / 1000)
    chunk = channel[i : i + round(ms * RATE / 1000)].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(chunk))
    return float(np.fft.rfftfreq(len(chunk), 1 / RATE)[np.argmax(spectrum)])


async def test_recorded_call_has_both_voices_at_their_times(tmp_path: Path) -> None:
    backend = ScriptedBackend([Reply(text="hello there", audio=tone(400, 24000, freq=800.0))])
    transport = MemoryTransport(playout="realtime")
    session = AgentSession(agent=Lookup(), backend=backend, vad=EnergyVAD(), turn=TURN)
    recorder = SessionRecorder(tmp_path, sample_rate=RATE)
    t_attach = time.monotonic()
    recorder.attach(session, transport)
    spoke_at: list[float] = []
    session.on(
        AgentStateChanged,
        lambda e: spoke_at.append(time.monotonic()) if e.new == "speaking" else None,
    )
    metrics = session.next_event(MetricsCollected)
    await session.start(transport)
    sr = transport.audio_input.sample_rate
    t_first = await speak_live(
        transport,
        [
            AudioFrame.silence(0.2, sr),
            tone(400, sr, freq=300.0, level=0.3),
            AudioFrame.silence(0.9, sr),
        ],
    )
    await metrics  # the reply played to its end
    await session.aclose()
    json_path, wav_path = await recorder.saved()

    audio, rate = sf.read(wav_path, dtype="int16", always_2d=True)
    assert rate == RATE and audio.shape[1] == 2
    caller, agent = audio[:, 0], audio[:, 1]
    expected_caller = 1000 * (t_first - t_attach) + 200
    assert abs(onset_ms(caller) - expected_caller) <= TOLERANCE_MS
    assert abs(peak_hz(caller, onset_ms(caller) + 50) - 300) < 30
    expected_agent = 1000 * (spoke_at[0] - t_attach)
    assert abs(onset_ms(agent) - expected_agent) <= TOLERANCE_MS
    assert abs(peak_hz(agent, onset_ms(agent) + 50) - 800) < 30
    assert abs(active_ms(agent) - 400) <= 40  # heard whole
    assert onset_ms(agent) > onset_ms(caller) + 400  # after the caller's turn ended

    doc = json.loads(json_path.read_text())
    assert doc["session_id"] == session.id and json_path.name == f"{session.id}.json"
    assert [item_from_json(i) for i in doc["items"]] == list(session.conversation)
    assert [t["response_id"] for t in doc["turns"]] and doc["turns"][0]["end_to_end_ms"] > 0
    assert any(e["event"] == "item_added" for e in doc["timeline"])


async def test_cleared_audio_is_not_in_the_recording(tmp_path: Path) -> None:
    """A barge-in clears the transport's buffer: the recording keeps only what played."""
    backend = ScriptedBackend(
        [Reply(text="a long answer that gets cut", audio=tone(3000, 24000, freq=800.0))]
    )
    transport = MemoryTransport(playout="manual", buffer_frames=15)  # 300 ms queued ahead
    session = AgentSession(agent=Lookup(), backend=backend, vad=EnergyVAD(), turn=TURN)
    recorder = SessionRecorder(tmp_path, sample_rate=RATE)
    recorder.attach(session, transport)
    await session.start(transport)
    sr = transport.audio_input.sample_rate
    transport.push(tone(300, sr, freq=300.0))
    transport.push_silence(400)
    await backend.session.wait_for_call("create_response")
    await transport.output.play(500)
    interrupted = session.next_event(AgentInterrupted)
    transport.push(tone(300, sr, freq=300.0))
    ev = await interrupted
    assert transport.output.clears and transport.output.clears[-1][1] >= 40  # audio was dropped
    await backend.session.wait_for_call("truncate")
    await session.aclose()
    json_path, wav_path = await recorder.saved()
    audio, _ = sf.read(wav_path, dtype="int16", always_2d=True)
    heard = active_ms(audio[:, 1])
    assert abs(heard - ev.played_ms) <= 40, (heard, ev.played_ms)
    items = [item_from_json(i) for i in json.loads(json_path.read_text())["items"]]
    assert items == list(session.conversation)
    assert any(isinstance(i, Message) and i.role == "assistant" for i in items)


async def test_playground_records_every_call(tmp_path: Path) -> None:
    """``agent dev --record DIR``: the playground's session factory attaches a recorder."""
    from duplex.agents.app import load_app
    from duplex.plugins.webrtc.playground import app_factory

    app = tmp_path / "rec_app.py"
    app.write_text("from duplex.agents import Agent\n\nclass A(Agent):\n    instructions = 'x'\n")
    backend = ScriptedBackend([Reply(text="recorded", audio_ms=200)])
    recorded: asyncio.Future[tuple[Path, Path]] = asyncio.get_running_loop().create_future()
    start = app_factory(
        load_app(str(app)),
        backend,
        record_dir=tmp_path / "calls",
        on_recorded=lambda j, w: recorded.set_result((j, w)),
    )
    transport = MemoryTransport()
    session = await start(transport)  # type: ignore[arg-type]
    assert isinstance(session, AgentSession)
    metrics = session.next_event(MetricsCollected)
    await session.send_text("hello")
    await metrics
    await session.aclose()
    await recorded
    saved = sorted(p.name for p in (tmp_path / "calls").iterdir())
    assert saved == [f"{session.id}.json", f"{session.id}.wav"]
    doc = json.loads((tmp_path / "calls" / f"{session.id}.json").read_text())
    assert [item_from_json(i) for i in doc["items"]] == list(session.conversation)
    assert [i["role"] for i in doc["items"]] == ["user", "assistant"]
