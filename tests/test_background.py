"""Background audio: a thinking cue only while tools run, never counted as heard reply audio."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from duplex.agents import Agent, AgentSession, EnergyVAD, function_tool
from duplex.agents.audio import AudioFrame
from duplex.agents.background import BackgroundAudio
from duplex.agents.events import AgentInterrupted, ToolExecuted
from duplex.agents.testing import MemoryTransport, Reply, ScriptedBackend, ScriptedCall

from .test_session import TURN, speak


class Desk(Agent):
    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    @function_tool
    async def check_calendar(self) -> str:
        """Look at the calendar (slow)."""
        await self.gate.wait()
        return "Tuesday is free"


def rms(frame: AudioFrame) -> float:
    return float(np.sqrt(np.mean(frame.data.astype(np.float64) ** 2)))


def dominant_hz(frame: AudioFrame) -> float:
    x = frame.data[:, 0].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / frame.sample_rate)[int(np.argmax(spectrum))])


async def start(
    replies: list[Reply], **bg: object
) -> tuple[AgentSession, MemoryTransport, ScriptedBackend, Desk, BackgroundAudio]:
    backend = ScriptedBackend(replies)
    transport = MemoryTransport(output_rate=24000, playout="manual")
    agent = Desk()
    session = AgentSession(agent=agent, backend=backend, vad=EnergyVAD(), turn=TURN)
    await session.start(transport)
    background = BackgroundAudio(thinking_delay_s=0.0, **bg)  # type: ignore[arg-type]
    background.attach(session)
    return session, transport, backend, agent, background


async def test_the_thinking_cue_plays_only_while_a_tool_runs() -> None:
    call = ScriptedCall("check_calendar")
    session, transport, _, agent, background = await start(
        [Reply(calls=(call,)), Reply(text="", audio_ms=0)]
    )
    silence = transport.output.listen(300)
    assert rms(silence) == 0.0  # nothing before the tool
    await session.generate_reply()
    await background.wait_thinking(True)
    line = transport.output.listen(1200)  # one whole period of the cue
    assert rms(line) > 300
    assert dominant_hz(line) in (pytest.approx(660, abs=15), pytest.approx(880, abs=15))
    done = session.next_event(ToolExecuted)
    agent.gate.set()
    await done
    assert not background.thinking  # off the moment the tool finished
    after = transport.output.listen(1200)
    assert rms(after) == 0.0
    await session.aclose()


async def test_truncation_counts_the_reply_not_the_cue_and_barge_in_stops_it() -> None:
    call = ScriptedCall("check_calendar")
    session, transport, backend, agent, background = await start(
        [Reply(text="Let me look that up for you", audio_ms=1000, calls=(call,))],
        thinking_gain=0.5,
    )
    await session.generate_reply()
    await backend.session.handles[0].done
    await background.wait_thinking(True)
    await transport.output.play(300)  # 300 ms of reply with the cue under it
    heard = transport.output.audio()
    assert heard is not None
    spectrum = np.abs(np.fft.rfft(heard.data[:, 0].astype(np.float64)))
    freqs = np.fft.rfftfreq(len(heard.data), 1 / heard.sample_rate)
    cue = spectrum[(freqs > 640) & (freqs < 900)].max()
    assert cue > 0.05 * spectrum.max()  # the cue is in what the caller heard
    interrupted = session.next_event(AgentInterrupted)
    speak(transport, ms=300)
    cut = await interrupted
    truncate = await backend.session.wait_for_call("truncate")
    assert truncate.args["audio_end_ms"] == pytest.approx(300, abs=1)
    assert cut.played_ms == pytest.approx(300, abs=1)
    await background.wait_thinking(False)  # the caller spoke: the cue stopped
    assert rms(transport.output.listen(200)) == 0.0
    agent.gate.set()
    await session.aclose()


async def test_ambient_sound_plays_under_everything_at_its_gain() -> None:
    rate = 24000
    t = np.arange(rate) / rate
    hum = AudioFrame((np.sin(2 * np.pi * 120 * t) * 10000).astype(np.int16), rate, 1)
    session, transport, _, _, _ = await start([], ambient=hum, ambient_gain=0.1)
    line = transport.output.listen(500)
    assert rms(line) == pytest.approx(10000 * 0.1 / np.sqrt(2), rel=0.05)
    assert dominant_hz(line) == pytest.approx(120, abs=3)
    await session.aclose()
