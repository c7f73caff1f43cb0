"""False cut-offs: does the turn end while the caller is only hesitating mid-sentence?

Each sentence with a hesitation (`offline_speech.PAUSED`, the pause stretched to
0.8 and 1.2 s) and each complete sentence (`COMPLETE`) is fed through the
`TurnDetector` (WebRTC VAD) frame by frame, once with the 500 ms silence rule and
once with the Smart Turn model. A cut-off is a turn that ends before the last
word. For complete sentences the delay from the last word to the end of the turn
(in audio time) shows what the model saves.

Audio is fed faster than real time; when the detector has asked the model, the
feed waits for the answer before the next frame, so a verdict is applied 20 ms
(one frame) after it was asked. In a live call it lands ~40-300 ms later
(inference time on this machine): the cut-off rate is unaffected unless speech
resumes within that time, but the measured delay on complete sentences is
optimistic by the inference time (the latency section measures it live).
"""

from __future__ import annotations

import asyncio
import statistics
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from duplex.agents.audio import AudioFrame
from duplex.agents.vad import EndOfTurnModel, SpeechEnd, TurnDetector, TurnOptions

from .offline_speech import RATE, Utterance

FRAME = RATE // 50  # 20 ms
PAUSES_S = (0.8, 1.2)


class _Recorder(EndOfTurnModel):
    def __init__(self, inner: EndOfTurnModel) -> None:
        self.inner = inner
        self.max_audio_ms = inner.max_audio_ms
        self.futures: list[Future[float]] = []

    def predict(self, audio: npt.NDArray[np.int16], sample_rate: int) -> Future[float]:
        fut = self.inner.predict(audio, sample_rate)
        self.futures.append(fut)
        return fut


@dataclass
class CutoffResult:
    label: str
    paused_trials: int = 0
    cut_off: int = 0
    complete_trials: int = 0
    complete_cut: int = 0
    #: Last word -> turn end, audio ms, for complete sentences.
    end_delay_ms: list[float] = field(default_factory=list)
    cut_texts: list[str] = field(default_factory=list)

    @property
    def cutoff_pct(self) -> float:
        return 100.0 * self.cut_off / max(1, self.paused_trials)

    def delay(self, q: float) -> float:
        if not self.end_delay_ms:
            return float("nan")
        xs = sorted(self.end_delay_ms)
        return xs[min(len(xs) - 1, int(q * len(xs)))]

    def markdown_row(self) -> str:
        med = statistics.median(self.end_delay_ms) if self.end_delay_ms else float("nan")
        return (
            f"| {self.label} | {self.cut_off}/{self.paused_trials} ({self.cutoff_pct:.0f} %) "
            f"| {self.complete_cut}/{self.complete_trials} | {med:.0f} | {self.delay(0.95):.0f} |"
        )


async def _first_end(audio: npt.NDArray[np.int16], options: TurnOptions) -> tuple[float, float]:
    """(audio ms of the end event, audio ms when it was decided) for the first turn end."""
    from duplex.plugins.webrtcvad import WebRTCVAD

    rec = options.end_of_turn
    detector = TurnDetector(WebRTCVAD(2), options, input_rate=RATE)
    for i in range(0, len(audio), FRAME):
        for ev in detector.push(AudioFrame(audio[i : i + FRAME], RATE)):
            if isinstance(ev, SpeechEnd):
                return ev.at_ms, detector.audio_ms
        if isinstance(rec, _Recorder) and rec.futures and not rec.futures[-1].done():
            await asyncio.wrap_future(rec.futures[-1])
    return float("inf"), float("inf")


async def measure(
    paused: list[Utterance], complete: list[Utterance], model: EndOfTurnModel | None, label: str
) -> CutoffResult:
    res = CutoffResult(label)
    lead = np.zeros(RATE // 2, np.int16)
    tail = np.zeros(RATE * 2, np.int16)
    for u in paused:
        for pause in PAUSES_S:
            audio = np.concatenate([lead, u.with_pause(pause), tail])
            speech_end_ms = 1000.0 * (len(audio) - len(tail)) / RATE
            options = TurnOptions(end_of_turn=_Recorder(model) if model else None)
            at_ms, _ = await _first_end(audio, options)
            res.paused_trials += 1
            if at_ms < speech_end_ms - 100:
                res.cut_off += 1
                res.cut_texts.append(f"{u.text} ({pause:.1f} s)")
    for u in complete:
        audio = np.concatenate([lead, u.audio, tail])
        speech_end_ms = 1000.0 * (len(audio) - len(tail)) / RATE
        options = TurnOptions(end_of_turn=_Recorder(model) if model else None)
        at_ms, decided = await _first_end(audio, options)
        res.complete_trials += 1
        if at_ms < speech_end_ms - 100:
            res.complete_cut += 1
        elif decided != float("inf"):
            res.end_delay_ms.append(decided - speech_end_ms)
    return res


MARKDOWN_HEADER = (
    "| rule | cut off mid-sentence (hesitations of 0.8 and 1.2 s) "
    "| complete sentences cut | last word → turn end p50 (ms, audio) | p95 |\n"
    "|---|---|---|---|---|"
)
