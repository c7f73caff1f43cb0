"""The end-of-turn model inside a whole session: a local-turn backend commits sooner or later."""

from __future__ import annotations

from concurrent.futures import Future

import numpy as np
import pytest

from duplex.agents import Agent, AgentSession, TurnOptions
from duplex.agents.testing import MemoryTransport, Reply, ScriptedBackend
from duplex.agents.vad import EndOfTurnModel
from duplex.plugins.webrtcvad import WebRTCVAD

from ..speech import espeak_available, speak

pytestmark = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")


class Fixed(EndOfTurnModel):
    def __init__(self, p: float) -> None:
        self.p = p
        self.asked = 0

    def predict(self, audio: np.ndarray, sample_rate: int) -> Future[float]:
        self.asked += 1
        fut: Future[float] = Future()
        fut.set_result(self.p)
        return fut


async def committed_ms(turn: TurnOptions) -> float:
    """Audio the session sent for one spoken question before it committed the turn."""
    # Local turns, as the cascade and OpenAI with server VAD off take them.
    backend = ScriptedBackend([Reply(text="Sure", audio_ms=200)], server_vad=False)
    transport = MemoryTransport(input_rate=16000, playout="auto")
    session = AgentSession(
        agent=Agent(instructions=""), backend=backend, vad=WebRTCVAD(2), turn=turn
    )
    await session.start(transport)
    try:
        transport.push_silence(400)
        transport.push(speak("Could you book a table for two tonight?", 16000))
        transport.push_silence(2500)
        commit = await backend.session.wait_for_call("commit_audio")
        await backend.session.wait_for_call("create_response")
        return 1000 * commit.args["samples"] / backend.capabilities.input_sample_rate
    finally:
        await session.aclose()


async def test_a_complete_verdict_commits_earlier_than_the_silence_rule() -> None:
    model = Fixed(0.9)
    with_model = await committed_ms(TurnOptions(end_of_turn=model))
    with_rule = await committed_ms(TurnOptions())
    assert model.asked == 1
    assert with_rule - with_model == pytest.approx(300, abs=60)  # 500 ms rule vs 200 ms pause


async def test_an_incomplete_verdict_holds_the_turn_to_the_longer_limit() -> None:
    waiting = await committed_ms(TurnOptions(end_of_turn=Fixed(0.1)))
    with_rule = await committed_ms(TurnOptions())
    assert waiting - with_rule == pytest.approx(1000, abs=60)  # 1500 ms limit vs 500 ms rule
