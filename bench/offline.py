"""`make bench` offline section: the offline default (Whisper, echo LLM, Piper) as callers hear it.

Latency is end of speech -> first reply audio, both taken at the transport: the
wall time the caller's last word was delivered to the session's input (audio is
fed in real time, 20 ms frames on absolute deadlines), and the wall time the
session handed the reply's first frame to the transport's output. 1, 2, 4 and 8
callers talk at once, in one process (as one server would host them), with the
500 ms silence rule, with the Smart Turn model, and with Smart Turn combined with
Whisper's text end-of-turn score (`offline_text`). Every level also records the
CPU the process used per caller, and a cumulative profile of each turn (end of
speech -> turn committed -> final transcript -> first synthesised audio ->
transport) from timing wrappers around the stages. Then the false cut-off
section (`offline_cutoff`).

    python -m bench.run --offline            # or: python -m bench.offline
    python -m bench.offline --quick          # fewer turns, fewer levels
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import os
import resource
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from duplex.agents import Agent, AgentSession, AudioFrame, AudioOutput, Transport
from duplex.agents.events import AgentStateChanged
from duplex.agents.stages import STT, TTS, PartialCallback, STTSession, STTUtterance
from duplex.agents.testing.memory import MemoryAudioInput
from duplex.agents.vad import TurnOptions

from . import offline_cutoff, offline_stt, offline_text, offline_words
from .offline_speech import COMPLETE, PAUSED, RATE, Utterance, synthesize, synthesize_midflow

Stages = tuple[STT, TTS]
RESULTS = Path(__file__).resolve().parent / "results"
FRAME = RATE // 50
_WORDS_INTRO = """### What a transcript check could add (measured, not built)

Whisper's transcript of the same clips; "complete" is overruled when its last word
is one of a fixed list of closed-class words (articles, prepositions, conjunctions,
possessives: `bench/offline_words.py`):

"""
#: Stricter "complete" thresholds the cut-off section also tries (the default is 0.5).
CUTOFF_THRESHOLDS = (0.7, 0.9)


# --- timing wrappers (public stage interfaces only) ---------------------------------------
@dataclass
class Marks:
    commit: float | None = None
    final: float | None = None
    tts_first: float | None = None

    def reset(self) -> None:
        self.commit = self.final = self.tts_first = None


class _TimedUtterance(STTUtterance):
    def __init__(self, inner: STTUtterance, marks: Marks) -> None:
        self.inner, self.marks = inner, marks

    async def push(self, frame: AudioFrame) -> None:
        await self.inner.push(frame)

    async def finish(self) -> str:
        self.marks.commit = time.monotonic()
        text = await self.inner.finish()
        self.marks.final = time.monotonic()
        return text

    async def cancel(self) -> None:
        await self.inner.cancel()


class _TimedSTTSession(STTSession):
    def __init__(self, inner: STTSession, marks: Marks) -> None:
        self.inner, self.marks = inner, marks

    def begin(self, on_partial: PartialCallback | None = None) -> STTUtterance:
        return _TimedUtterance(self.inner.begin(on_partial), self.marks)

    async def aclose(self) -> None:
        await self.inner.aclose()


class TimedSTT(STT):
    def __init__(self, inner: STT, marks: Marks) -> None:
        self.inner, self.marks = inner, marks
        self.sample_rate = inner.sample_rate

    async def connect(self) -> STTSession:
        return _TimedSTTSession(await self.inner.connect(), self.marks)

    async def prepare(self) -> None:
        await self.inner.prepare()


class TimedTTS(TTS):
    def __init__(self, inner: TTS, marks: Marks) -> None:
        self.inner, self.marks = inner, marks
        self.sample_rate = inner.sample_rate

    async def prepare(self) -> None:
        await self.inner.prepare()

    async def synthesize(self, text: str) -> AsyncIterator[AudioFrame]:
        async for frame in self.inner.synthesize(text):
            if self.marks.tts_first is None:
                self.marks.tts_first = time.monotonic()
            yield frame


# --- the call -----------------------------------------------------------------------------
class StampOutput(AudioOutput):
    """Takes frames at once and notes when the first one of each reply arrived."""

    channels = 1
    frame_ms = 20.0

    def __init__(self, rate: int) -> None:
        self.sample_rate = rate
        self.first: float | None = None

    async def write(self, frame: AudioFrame) -> None:
        if self.first is None:
            self.first = time.monotonic()

    def clear(self) -> float:
        return 0.0

    @property
    def buffered_ms(self) -> float:
        return 0.0

    async def wait_drained(self) -> None:
        return None


class OfflineTransport(Transport):
    def __init__(self, out_rate: int) -> None:
        super().__init__()
        self.mic = MemoryAudioInput(RATE, 1)
        self.audio_input = self.mic
        self.out = StampOutput(out_rate)
        self.audio_output = self.out

    async def aclose(self) -> None:
        self.mic.end()
        await super().aclose()


def _ms(t: float | None, since: float) -> float | None:
    return None if t is None else 1000.0 * (t - since)


@dataclass
class Turn:
    latency_ms: float | None
    commit_ms: float | None
    final_ms: float | None
    tts_ms: float | None


async def _feed(t: OfflineTransport, pcm: np.ndarray, clock: list[float]) -> None:
    """Deliver audio in 20 ms frames on absolute deadlines (real time)."""
    for i in range(0, len(pcm), FRAME):
        clock[0] += FRAME / RATE
        delay = clock[0] - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        t.mic.push(AudioFrame(pcm[i : i + FRAME], RATE))


async def run_call(
    idx: int, utts: list[Utterance], turns: int, turn: TurnOptions, stages: Stages
) -> list[Turn]:
    from duplex.backends.cascade import CascadeBackend, EchoLLM
    from duplex.plugins.webrtcvad import WebRTCVAD

    stt, tts = stages
    marks = Marks()
    backend = CascadeBackend(TimedSTT(stt, marks), EchoLLM(), TimedTTS(tts, marks))
    transport = OfflineTransport(tts.sample_rate)
    session = AgentSession(
        agent=Agent(instructions="Echo the caller."),
        backend=backend,
        vad=WebRTCVAD(2),
        turn=turn,
    )
    listening = asyncio.Event()
    session.on(
        AgentStateChanged, lambda e: listening.set() if e.new == "listening" else listening.clear()
    )
    await session.start(transport)
    clock = [time.monotonic()]
    silence = np.zeros(FRAME, np.int16)
    out: list[Turn] = []
    try:
        await _feed(transport, np.zeros(RATE // 2 + idx * RATE // 10, np.int16), clock)
        for k in range(turns):
            u = utts[(idx + k) % len(utts)]
            marks.reset()
            transport.out.first = None
            await _feed(transport, u.audio, clock)
            eos = clock[0]  # the last word's frame is due now
            waited = 0
            while transport.out.first is None and waited < 250:  # up to 5 s
                await _feed(transport, silence, clock)
                waited += 1
            first = transport.out.first

            out.append(
                Turn(*(_ms(t, eos) for t in (first, marks.commit, marks.final, marks.tts_first)))
            )
            # Let the reply finish, then a short gap before the next question.
            for _ in range(250):
                if listening.is_set() and transport.out.first is not None:
                    break
                await _feed(transport, silence, clock)
            await _feed(transport, np.zeros(RATE // 2, np.int16), clock)
    finally:
        await session.aclose()
    return out


@dataclass
class Level:
    label: str
    callers: int
    turns: list[Turn] = field(default_factory=list)
    cpu_pct_per_caller: float = 0.0
    wall_s: float = 0.0
    load: float = 0.0

    def pct(self, attr: str, q: float) -> float:
        xs: list[float] = sorted(
            float(getattr(t, attr)) for t in self.turns if getattr(t, attr) is not None
        )
        if not xs:
            return float("nan")
        return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]

    @property
    def missed(self) -> int:
        return sum(t.latency_ms is None for t in self.turns)


async def run_level(
    label: str,
    callers: int,
    turns: int,
    turn: TurnOptions,
    stages: Stages,
    utts: list[Utterance],
) -> Level:
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    load0 = os.getloadavg()[0]
    results = await asyncio.gather(
        *(run_call(i, utts, turns, turn, stages) for i in range(callers))
    )
    wall = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    lvl = Level(label, callers, [t for r in results for t in r])
    lvl.wall_s = wall
    lvl.cpu_pct_per_caller = 100.0 * cpu / wall / callers
    lvl.load = max(load0, os.getloadavg()[0])
    return lvl


def _row(lvl: Level) -> str:
    def f(x: float) -> str:
        return "–" if x != x else f"{x:.0f}"

    return (
        f"| {lvl.label} | {lvl.callers} | {len([t for t in lvl.turns if t.latency_ms])} "
        f"| {f(lvl.pct('latency_ms', 0.5))} | {f(lvl.pct('latency_ms', 0.95))} "
        f"| {f(lvl.pct('commit_ms', 0.5))} | {f(lvl.pct('final_ms', 0.5))} "
        f"| {f(lvl.pct('tts_ms', 0.5))} | {lvl.cpu_pct_per_caller:.0f} % | {lvl.missed} "
        f"| {lvl.load:.1f} |"
    )


async def main_async(
    quick: bool,
    levels: list[int],
    out: Path,
    stt_section: bool = True,
    cutoffs: bool = True,
    rules: tuple[str, ...] = ("silence 500 ms", "Smart Turn", "Smart Turn + text"),
) -> Path:
    from duplex.plugins.piper import PiperTTS
    from duplex.plugins.smart_turn import SmartTurn, smart_turn_options
    from duplex.plugins.whisper import WhisperSTT

    print("synthesising the caller's sentences...", flush=True)
    complete = await synthesize(COMPLETE, paused=False)
    paused = (
        {
            "comma": await synthesize(PAUSED, paused=True),
            "mid-flow": await asyncio.to_thread(synthesize_midflow, PAUSED),
        }
        if cutoffs
        else {}
    )
    stt, tts = WhisperSTT(), PiperTTS()
    await asyncio.gather(stt.prepare(), tts.prepare())
    smart = smart_turn_options()  # Smart Turn alone, as a command gave it before the text score
    if smart is None:
        raise SystemExit("the offline section needs Smart Turn: pip install '.[smart_turn]'")
    started = time.monotonic()
    rows: list[Level] = []
    latency_rules = [("silence 500 ms", TurnOptions()), ("Smart Turn", smart)]
    latency_rules.append(("Smart Turn + text", offline_text.combined(smart)))
    for label, turn in latency_rules:
        if label not in rules:
            continue
        for n in levels:
            turns = (
                max(2, (6 if quick else 10) // max(1, n // 2)) if n <= 2 else (3 if quick else 4)
            )
            print(f"  {label}: {n} caller(s) x {turns} turns...", flush=True)
            lvl = await run_level(label, n, turns, turn, (stt, tts), complete)
            print("   ", _row(lvl), flush=True)
            rows.append(lvl)
    print("speech-to-text finals...", flush=True)
    stt_rows = await offline_stt.measure(complete, runs=2 if quick else 4) if stt_section else []
    if not cutoffs:
        md = _markdown(rows, stt_rows, [], "", tuple(paused), time.monotonic() - started, quick)
        print(md)
        return out
    print("false cut-offs...", flush=True)
    cut_rules = [("silence 500 ms", TurnOptions()), ("Smart Turn alone", smart)]
    cut_rules += [
        (f"Smart Turn, threshold {t}", dataclasses.replace(smart, end_of_turn_threshold=t))
        for t in CUTOFF_THRESHOLDS
    ]
    cut_rules.append(("Smart Turn + text (the default)", offline_text.combined(smart)))
    cut_rules += [
        (f"Smart Turn + text, veto below {b}", offline_text.combined(smart, unfinished_below=b))
        for b in offline_text.VETO_BOUNDS
    ]
    cuts = []
    for label, turn in cut_rules:
        cuts.append(await offline_cutoff.measure(paused, complete, turn, label))
        print("   ", cuts[-1].markdown_row(tuple(paused)), flush=True)
    # The model as it is, without the detector's cut of the silence to `trailing_ms`.
    raw = SmartTurn(getattr(smart.end_of_turn, "model_path", None), trailing_ms=None)
    alone = await offline_cutoff.model_table(raw, paused, complete)
    print(alone, flush=True)
    words = await offline_words.table(smart.end_of_turn or raw, paused, complete)
    print(words, flush=True)
    text = await offline_text.table(smart, paused, complete)
    print(text, flush=True)
    md = _markdown(
        rows,
        stt_rows,
        cuts,
        alone + "\n\n" + _WORDS_INTRO + words + "\n\n" + offline_text.INTRO + text,
        tuple(paused),
        time.monotonic() - started,
        quick,
    )
    path = out / f"{dt.date.today().isoformat()}-offline.md"
    await asyncio.to_thread(_write, path, md)
    print(md)
    return path


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _markdown(
    rows: list[Level],
    stt_rows: list[offline_stt.SttRow],
    cuts: list[offline_cutoff.CutoffResult],
    alone: str,
    styles: tuple[str, ...],
    took_s: float,
    quick: bool,
) -> str:
    head = (
        "| end of turn | callers | turns | p50 ms | p95 ms | → commit p50 | → final text p50 "
        "| → first TTS audio p50 | CPU per caller | no reply | load avg |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|"
    )
    cut_lines = offline_cutoff.markdown(cuts, styles)
    cut_list = ", ".join(cuts[1].cut_texts) if len(cuts) > 1 else "none"
    return f"""# Offline default: end of speech → first reply audio ({dt.date.today().isoformat()})

Offline default (Whisper tiny.en, echo LLM, Piper joe-medium, WebRTC VAD), all
callers in one process, audio in real time; times from the caller's last word
entering the transport to the reply's first frame leaving the session for the
transport. `→ commit / final text / first TTS audio` are the cumulative steps
(medians, ms after the last word). {"Reduced run (`--quick`)." if quick else ""}
Run took {took_s:.0f} s. The load column is the machine's load average during each
row: above ~2 on these 2 cores other work inflates the figures.

{head}
{chr(10).join(_row(r) for r in rows)}

## Speech-to-text: the final after the turn ends (one caller)

{offline_stt.MARKDOWN_HEADER}
{chr(10).join(r.markdown_row() for r in stt_rows)}

## False cut-offs

{cut_lines}

{len(PAUSED)} sentences with a hesitation of 0.8 and 1.2 s, each pause made two ways
(`bench/offline_speech.py`: *comma* = Piper's phrase break, often phrase-final
pitch; *mid-flow* = silence inserted into the fluent sentence), and
{len(COMPLETE)} complete sentences. Cut off by Smart Turn alone: {cut_list}.

### The model alone

What Smart Turn answers for the unfinished halves (speech up to the hesitation)
and the complete sentences, given exactly this much silence after the last word
(the model as loaded with `trailing_ms=None`; the default cuts what it hears after
the last sound to 200 ms, see `SmartTurn.trailing_ms`):

{alone}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--cutoffs-only", action="store_true", help="only the false cut-off section (~1-2 min)"
    )
    parser.add_argument(
        "--latency-only",
        choices=["both", "silence", "smart", "text"],
        help="only the latency table, for one rule or all (for profiling)",
    )
    parser.add_argument(
        "--no-renice", action="store_true", help="do not raise the benchmark's priority"
    )
    args = parser.parse_args(argv)
    if not args.no_renice and hasattr(os, "nice"):
        # Before any thread exists, so all inherit it: other load on a shared machine
        # then disturbs the figures less (as `bench.run` does for the online section).
        with contextlib.suppress(OSError):
            os.nice(-10)
    levels = [] if args.cutoffs_only else args.levels
    only = args.latency_only
    rules = {
        "silence": ("silence 500 ms",),
        "smart": ("Smart Turn",),
        "text": ("Smart Turn + text",),
    }.get(only or "both", ("silence 500 ms", "Smart Turn", "Smart Turn + text"))
    path = asyncio.run(
        main_async(
            args.quick,
            levels,
            args.out,
            stt_section=not (args.cutoffs_only or only),
            cutoffs=not only,
            rules=rules,
        )
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
