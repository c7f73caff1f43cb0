"""The bench's false cut-off section counts what the detector does with real generated speech."""

from __future__ import annotations

from concurrent.futures import Future

import numpy as np
import pytest

from bench import offline_cutoff
from bench.offline_speech import synthesize, synthesize_midflow
from duplex.agents.vad import EndOfTurnModel, TurnOptions


class Fixed(EndOfTurnModel):
    def __init__(self, p: float) -> None:
        self.p = p

    def predict(self, audio: np.ndarray, sample_rate: int) -> Future[float]:
        fut: Future[float] = Future()
        fut.set_result(self.p)
        return fut


SENTENCE = ("I would like to book a table for, two people.",)


@pytest.fixture
async def speech() -> tuple[dict[str, list[offline_cutoff.Utterance]], list]:
    paused = {"comma": await synthesize(SENTENCE, paused=True)}
    midflow = synthesize_midflow(SENTENCE)
    if midflow:
        paused["mid-flow"] = midflow
    return paused, await synthesize(("Please turn on the kitchen lights.",), paused=False)


async def test_complete_verdicts_cut_every_hesitation_and_incomplete_ones_none(
    speech: tuple[dict[str, list[offline_cutoff.Utterance]], list],
) -> None:
    paused, complete = speech
    styles = tuple(paused)
    trials = len(offline_cutoff.PAUSES_S)
    eager = await offline_cutoff.measure(paused, complete, TurnOptions(end_of_turn=Fixed(0.9)), "a")
    patient = await offline_cutoff.measure(
        paused, complete, TurnOptions(end_of_turn=Fixed(0.1)), "b"
    )
    rule = await offline_cutoff.measure(paused, complete, TurnOptions(), "silence")
    for style in styles:
        assert eager.paused[style] == [trials, trials]
        assert patient.paused[style] == [trials, 0]  # 1.2 s < the 1.5 s limit
        assert rule.paused[style] == [trials, trials]  # hesitations longer than 500 ms
    # "Complete" ends a finished sentence soon after its last word; "incomplete" holds it.
    assert eager.complete_held == 0 and patient.complete_held == 1
    assert eager.end_delay_ms[0] < rule.end_delay_ms[0] < patient.end_delay_ms[0]
    table = offline_cutoff.markdown([rule, eager, patient], styles)
    assert table.count("\n") == 4 and "| silence |" in table
