"""A whole offline call with Smart Turn and preemptive replies: remembered is what was played."""

from __future__ import annotations

import asyncio
from concurrent.futures import Future

import numpy as np
import pytest

from duplex.agents import Agent, AgentSession, AudioFrame, Message, MetricsCollected, TurnOptions
from duplex.agents.testing import MemoryTransport
from duplex.agents.vad import EndOfTurnModel
from duplex.backends.cascade import CascadeBackend, EchoLLM
from duplex.plugins.piper import PiperTTS
from duplex.plugins.smart_turn import SmartTurn, bundled_model_path
from duplex.plugins.webrtcvad import WebRTCVAD
from duplex.plugins.whisper import WhisperSTT
from duplex.plugins.whisper.model import transcribe

from ..cascade.helpers import to_16k, words
from .utterances import synth

pytestmark = pytest.mark.skipif(bundled_model_path() is None, reason="needs pipecat-ai")


class Counting(EndOfTurnModel):
    """The real model, noting its answers and letting the test wait for the next one."""

    def __init__(self, inner: SmartTurn) -> None:
        self.inner = inner
        self.max_audio_ms = inner.max_audio_ms
        self.answers: list[float] = []
        self.answered = asyncio.Event()

    def predict(self, audio: np.ndarray, sample_rate: int) -> Future[float]:
        loop = asyncio.get_running_loop()
        fut = self.inner.predict(audio, sample_rate)

        def note(f: Future[float]) -> None:
            if not f.cancelled() and f.exception() is None:
                loop.call_soon_threadsafe(self._note, f.result())

        fut.add_done_callback(note)
        return fut

    def _note(self, p: float) -> None:
        self.answers.append(p)
        self.answered.set()


async def test_two_spoken_turns_answered_and_remembered_as_heard(piper: PiperTTS) -> None:
    stt = WhisperSTT()
    backend = CascadeBackend(stt, EchoLLM(), piper)  # preemptive replies on (the default)
    model = Counting(SmartTurn())
    rate = piper.sample_rate
    transport = MemoryTransport(input_rate=rate, output_rate=rate, playout="auto")
    session = AgentSession(
        agent=Agent(instructions="Echo."),
        backend=backend,
        vad=WebRTCVAD(2),
        turn=TurnOptions(end_of_turn=model),
    )
    await session.start(transport)
    try:
        for n, text in enumerate(("Please turn on the kitchen lights.", "Tell me a joke.")):
            done = session.next_event(MetricsCollected, lambda e: e.metrics.played_ms > 0)
            model.answered.clear()
            transport.push_silence(300)
            transport.push(AudioFrame(await synth(piper, text), rate))
            # Audio arrives faster than real time here: hold the rest of the silence until
            # the model has answered, as a live call's 20 ms frames would wait for it.
            transport.push_silence(400)
            await asyncio.wait_for(model.answered.wait(), 30)
            transport.push_silence(1600)
            await done
            assert len(model.answers) == n + 1
        items = [it for it in session.conversation if isinstance(it, Message)]
        assert [m.role for m in items] == ["user", "assistant", "user", "assistant"]
        assert {"kitchen", "lights"} <= set(words(items[0].text))
        assert "joke" in words(items[2].text)
        # What the model remembers saying is exactly what the caller was played.
        said = items[1].audio_ms + items[3].audio_ms
        assert said == pytest.approx(transport.output.played_ms, abs=50)
        heard = transcribe(stt.model, to_16k(transport.output.audio()))  # type: ignore[arg-type]
        assert {"said", "kitchen", "lights", "joke"} <= set(words(heard))
        assert model.answers[-1] > 0.5  # the turn ended on the model's "complete"
    finally:
        await session.aclose()
