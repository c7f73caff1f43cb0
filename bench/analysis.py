"""Join the callers' records with the server's and reduce a run to one row of numbers.

Per reply (server response caused by a turn):
  input path  = server receipt of the append holding the turn's last speech sample
                - delivery time of the caller frame holding that sample
  output path = first frame played by the caller's speaker - server send time of the
                first audio delta
  added       = input path + output path (the server's own time in between is not counted)
Per barge-in: interruption = first output stop after the onset - true speech onset.
Only events inside the worker's measurement window count.
"""

from __future__ import annotations

import bisect
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from . import config as C

#: A pairing further apart than this is a mismatch (a turn the server split, say), not a sample.
MAX_PATH_S = 1.5
MAX_INTERRUPT_S = 3.0
#: A turn ending this close to the window's end may be answered after the workers stop.
TURN_TAIL_S = 1.5


@dataclass
class Row:
    framework: str
    sessions: int
    started: int
    input_ms: dict[str, float | None] = field(default_factory=dict)
    output_ms: dict[str, float | None] = field(default_factory=dict)
    added_ms: dict[str, float | None] = field(default_factory=dict)
    interrupt_ms: dict[str, float | None] = field(default_factory=dict)
    lateness_ms: dict[str, float | None] = field(default_factory=dict)
    server_time_ms: float | None = None
    replies: int = 0
    #: The callers' utterances that ended inside the window (its last TURN_TAIL_S aside) ...
    turns: int = 0
    #: ... and those the server answered with audio.
    answered: int = 0
    interruptions: int = 0
    missed_interruptions: int = 0
    timeouts: int = 0
    underruns: int = 0
    cpu_per_session_s: float | None = None
    cpu_total_pct: float | None = None
    mb_per_session: float | None = None
    rss_mb: float | None = None
    server_errors: dict[str, int] = field(default_factory=dict)
    client_errors: int = 0
    server_cpu_pct: float | None = None
    foreign_cpu_pct: float | None = None
    cpu_pressure_pct: float | None = None
    failed: list[str] = field(default_factory=list)
    start_seconds: float = 0.0
    #: The longest the callers' microphones were held up: how far the event loop stalled.
    loop_stall_ms: float = 0.0
    gc_max_ms: float = 0.0
    #: Processes the framework ran in (duplex on N workers; 1 otherwise).
    workers: int = 1
    #: RSS of one worker process with its first session up, averaged over the workers.
    worker_mb: float | None = None
    #: Each worker's CPU seconds per wall second (how evenly the sessions loaded them).
    cores_by_worker: list[float] = field(default_factory=list)

    @property
    def cores_used(self) -> float | None:
        """CPU seconds of the framework's processes per wall second of the window."""
        return None if self.cpu_total_pct is None else self.cpu_total_pct / 100.0

    @property
    def lateness_p99(self) -> float | None:
        return self.lateness_ms.get("p99")

    @property
    def every_turn_answered(self) -> bool:
        return self.turns > 0 and self.answered == self.turns and self.timeouts == 0

    def healthy(self) -> bool:
        """The level is within what the machine can do: smooth output, everyone served."""
        p99 = self.lateness_p99
        return (
            p99 is not None
            and p99 <= C.LATENESS_LIMIT_MS
            and self.started == self.sessions
            and self.timeouts <= max(1, self.sessions // 20)
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def pct(values: list[float], qs: tuple[int, ...] = (50, 95, 99)) -> dict[str, float | None]:
    out: dict[str, float | None] = {f"p{q}": None for q in qs}
    if values:
        arr = np.asarray(values)
        out.update({f"p{q}": float(np.percentile(arr, q)) for q in qs})
    out["n"] = float(len(values))
    return out


def _in(t: float, window: tuple[float, float]) -> bool:
    return window[0] <= t <= window[1]


def analyse(worker: dict[str, Any], server: dict[str, Any]) -> Row:
    window = (float(worker["window"][0]), float(worker["window"][1]))
    row = Row(worker["framework"], int(worker["sessions"]), int(worker["started"]))
    row.failed = list(worker.get("failed", []))
    row.start_seconds = float(worker.get("start_seconds", 0.0))
    row.loop_stall_ms = float(worker.get("metronome_max_lag_ms", 0.0))
    row.gc_max_ms = float(worker.get("gc", {}).get("max_ms", 0.0))
    inputs: list[float] = []
    outputs: list[float] = []
    added: list[float] = []
    interrupts: list[float] = []
    server_time: list[float] = []
    srv_sessions: dict[str, Any] = server.get("sessions", {})
    for sid, call in worker["calls"].items():
        row.timeouts += int(call["timeouts"])
        row.client_errors += int(call["errors"])
        srv = srv_sessions.get(sid, {"responses": []})
        utt = sorted(
            (u for u in call["utterances"] if u["last_speech_at"] > 0),
            key=lambda u: u["last_speech_at"],
        )
        utt_ends = [u["last_speech_at"] for u in utt]
        segs = sorted(call["segments"], key=lambda s: s["start_at"])
        seg_starts = [s["start_at"] for s in segs]
        row.underruns += sum(int(s["underruns"]) for s in segs if _in(s["start_at"], window))
        firsts = sorted(r["first_delta_at"] for r in srv["responses"] if r["first_delta_at"])
        for resp in srv["responses"]:
            last, first = resp["turn_last_speech_at"], resp["first_delta_at"]
            if last is None or first is None or not _in(last, window):
                continue
            row.replies += 1
            i = bisect.bisect_right(utt_ends, last) - 1
            inp = last - utt_ends[i] if i >= 0 else None
            if inp is not None and not 0 <= inp < MAX_PATH_S:
                inp = None
            j = bisect.bisect_left(seg_starts, first)
            out = seg_starts[j] - first if j < len(segs) else None
            k = bisect.bisect_right(firsts, first)
            if out is not None and (
                out >= MAX_PATH_S or (k < len(firsts) and seg_starts[j] > firsts[k])
            ):
                out = None  # the next frame heard belongs to a later reply
            if inp is not None:
                inputs.append(1000.0 * inp)
            if out is not None:
                outputs.append(1000.0 * out)
            if inp is not None and out is not None:
                added.append(1000.0 * (inp + out))
            server_time.append(1000.0 * (first - last))
        answered = sorted(
            r["turn_last_speech_at"]
            for r in srv["responses"]
            if r["turn_last_speech_at"] is not None and r["first_delta_at"] is not None
        )
        for end in utt_ends:
            if window[0] <= end <= window[1] - TURN_TAIL_S:
                row.turns += 1
                i = bisect.bisect_left(answered, end)
                row.answered += int(i < len(answered) and answered[i] - end < MAX_PATH_S)
        stops = sorted(call["stops"])
        for u in call["utterances"]:
            if u["kind"] != "barge_in" or not _in(u["onset_at"], window):
                continue
            i = bisect.bisect_left(stops, u["onset_at"])
            if i < len(stops) and stops[i] - u["onset_at"] < MAX_INTERRUPT_S:
                interrupts.append(1000.0 * (stops[i] - u["onset_at"]))
                row.interruptions += 1
            else:
                row.missed_interruptions += 1
    row.input_ms = pct(inputs)
    row.output_ms = pct(outputs)
    row.added_ms = pct(added)
    row.interrupt_ms = pct(interrupts)
    row.lateness_ms = {k: v for k, v in worker["lateness"].items() if k != "frames"}
    row.server_time_ms = float(np.median(server_time)) if server_time else None
    seconds = window[1] - window[0]
    if row.started:
        row.cpu_per_session_s = float(worker["cpu_seconds"]) / (row.started * seconds)
    row.cpu_total_pct = 100.0 * float(worker["cpu_seconds"]) / seconds
    by_worker = worker.get("cpu_seconds_by_worker", [worker["cpu_seconds"]])
    row.cores_by_worker = [float(c) / seconds for c in by_worker]
    row.rss_mb = worker["rss_end"] / 2**20
    row.workers = int(worker.get("workers", 1))
    row.worker_mb = worker["rss_one"] / 2**20 / row.workers
    if row.started > row.workers:
        extra = row.started - row.workers  # every worker's first session is its baseline
        row.mb_per_session = (worker["rss_end"] - worker["rss_one"]) / 2**20 / extra
    row.server_errors = {k: int(v) for k, v in server.get("errors", {}).items()}
    return row
