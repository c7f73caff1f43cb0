"""False cut-offs: does the turn end while the caller is only hesitating mid-sentence?

Each sentence with a hesitation (`offline_speech.PAUSED`, both ways of making the
pause, stretched to 0.8 and 1.2 s) and each complete sentence (`COMPLETE`) is fed
through the `TurnDetector` (WebRTC VAD) frame by frame: with the 500 ms silence
rule, with the default Smart Turn options, and with stricter probability
thresholds. A cut-off is a turn that ends before the last word. For complete
sentences the delay from the last word to the end of the turn (audio time) shows
what the model saves, and "held" counts those it kept open to the silence limit.

Audio is fed faster than real time; when the detector has asked the model, the
feed waits for the answer before the next frame, so a verdict is applied 20 ms
(one frame) after it was asked. In a live call it lands ~40-300 ms later
(inference time on this machine): the cut-off rate is unaffected unless speech
resumes within that time, but the measured delay on complete sentences is
optimistic by the inference time (the latency section measures it live).
"""

from __future__ import annotations

import asyncio
import dataclasses
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
#: A complete sentence whose turn ended this long after its last word was held too long.
HELD_MS = 1000.0


class Recorder(EndOfTurnModel):
    """Passes questions to ``inner`` and keeps their futures, so a feed can wait for each."""

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
    #: Per way of making the pause: [trials, cut off].
    paused: dict[str, list[int]] = field(default_factory=dict)
    complete_trials: int = 0
    complete_cut: int = 0
    complete_held: int = 0
    #: Last word -> turn end, audio ms, for complete sentences.
    end_delay_ms: list[float] = field(default_factory=list)
    cut_texts: list[str] = field(default_factory=list)

    def rate(self, style: str) -> str:
        trials, cut = self.paused.get(style, [0, 0])
        return f"{cut}/{trials} ({100.0 * cut / trials:.0f} %)" if trials else "–"

    def delay(self, q: float) -> float:
        if not self.end_delay_ms:
            return float("nan")
        xs = sorted(self.end_delay_ms)
        return xs[min(len(xs) - 1, int(q * len(xs)))]

    def markdown_row(self, styles: tuple[str, ...]) -> str:
        med = statistics.median(self.end_delay_ms) if self.end_delay_ms else float("nan")
        rates = " | ".join(self.rate(s) for s in styles)
        return (
            f"| {self.label} | {rates} | {self.complete_cut}/{self.complete_trials} "
            f"| {self.complete_held}/{self.complete_trials} | {med:.0f} | {self.delay(0.95):.0f} |"
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
        if isinstance(rec, Recorder) and rec.futures and not rec.futures[-1].done():
            await asyncio.wrap_future(rec.futures[-1])
    return float("inf"), float("inf")


def _recording(options: TurnOptions) -> TurnOptions:
    model = options.end_of_turn
    return dataclasses.replace(options, end_of_turn=Recorder(model) if model else None)


async def measure(
    paused: dict[str, list[Utterance]],
    complete: list[Utterance],
    options: TurnOptions,
    label: str,
) -> CutoffResult:
    """``paused`` maps a way of making the pause (e.g. "comma") to its sentences."""
    res = CutoffResult(label)
    lead = np.zeros(RATE // 2, np.int16)
    tail = np.zeros(RATE * 2, np.int16)
    for style, utts in paused.items():
        counts = res.paused.setdefault(style, [0, 0])
        for u in utts:
            for pause in PAUSES_S:
                audio = np.concatenate([lead, u.with_pause(pause), tail])
                speech_end_ms = 1000.0 * (len(audio) - len(tail)) / RATE
                at_ms, _ = await _first_end(audio, _recording(options))
                counts[0] += 1
                if at_ms < speech_end_ms - 100:
                    counts[1] += 1
                    res.cut_texts.append(f"{u.text} ({style}, {pause:.1f} s)")
    for u in complete:
        audio = np.concatenate([lead, u.audio, tail])
        speech_end_ms = 1000.0 * (len(audio) - len(tail)) / RATE
        at_ms, decided = await _first_end(audio, _recording(options))
        res.complete_trials += 1
        if at_ms < speech_end_ms - 100:
            res.complete_cut += 1
        elif decided != float("inf"):
            res.end_delay_ms.append(decided - speech_end_ms)
            res.complete_held += decided - speech_end_ms >= HELD_MS
    return res


def markdown(results: list[CutoffResult], styles: tuple[str, ...]) -> str:
    """The table: one row per rule, one cut-off column per way of making the pause."""
    cols = " | ".join(f"cut off mid-sentence: {s}" for s in styles)
    head = (
        f"| rule | {cols} | complete sentences cut | complete held ≥ {HELD_MS / 1000:.0f} s "
        "| last word → turn end p50 (ms, audio) | p95 |\n"
        f"|---|{'---|' * len(styles)}---|---|---|---|"
    )
    return "\n".join([head, *(r.markdown_row(styles) for r in results)])


MODEL_TRAILING_MS = (100, 200, 300, 500)
MODEL_THRESHOLDS = (0.5, 0.7, 0.9)


def _share(ps: list[float], threshold: float) -> str:
    return f"{100.0 * sum(p >= threshold for p in ps) / max(1, len(ps)):.0f} %"


async def model_table(
    model: EndOfTurnModel, paused: dict[str, list[Utterance]], complete: list[Utterance]
) -> str:
    """The model alone: how often it calls an unfinished half (or a whole sentence) complete,
    by the silence it hears after the last word and the probability threshold.

    No VAD and no detector: each clip is the speech, then exactly that much silence.
    """
    lead = np.zeros(RATE // 2, np.int16)

    async def p(audio: npt.NDArray[np.int16], trailing_ms: int) -> float:
        clip = np.concatenate([lead, audio, np.zeros(trailing_ms * RATE // 1000, np.int16)])
        return await asyncio.wrap_future(model.predict(clip, RATE))

    styles = tuple(paused)
    head = (
        "| silence after the last word | threshold | "
        + " | ".join(f"halves called complete: {s}" for s in styles)
        + " | complete sentences called complete |\n"
        + f"|---|---|{'---|' * len(styles)}---|"
    )
    rows = []
    for ms in MODEL_TRAILING_MS:
        halves = {s: [await p(u.audio[: u.gap[0]], ms) for u in paused[s] if u.gap] for s in styles}
        whole = [await p(u.audio, ms) for u in complete]
        for t in MODEL_THRESHOLDS:
            cells = " | ".join(_share(halves[s], t) for s in styles)
            rows.append(f"| {ms} ms | {t} | {cells} | {_share(whole, t)} |")
    return "\n".join([head, *rows])
