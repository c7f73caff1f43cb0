"""The results file's scaling sections: duplex on 1 and N workers, the 300-session targets,
and each framework's memory in the shape it is deployed in."""

from __future__ import annotations

from typing import Any

from .analysis import Row
from .multi import split_name

#: The issue's targets at the top level, duplex on its workers.
TOP_LEVEL = 300
TOP_LATENESS_MS = 20.0
#: duplex's sessions per worker in the "as deployed" figure: the top level over 2 workers.
SESSIONS_PER_WORKER = 150


#: How each framework (a worker's ``--framework``) is named in the results.
NAMES = {
    "duplex": "duplex",
    "livekit": "livekit-agents",
    "pipecat": "pipecat",
    "duplex_server_vad": "duplex (server VAD only)",
    "harness": "harness alone",
    "floor": "floor (bytes only)",
}


def find_row(rows: list[Row], framework: str, sessions: int) -> Row | None:
    return next((r for r in rows if r.framework == framework and r.sessions == sessions), None)


def display_name(framework: str, names: dict[str, str]) -> str:
    base, workers = split_name(framework)
    name = names.get(base, base)
    return name if workers == 1 else f"{name}, {workers} workers"


def fmt(v: float | None, digits: int = 1) -> str:
    """A figure for a table cell ("–" when not measured)."""
    return "–" if v is None else f"{v:.{digits}f}"


def _harness_cpu(harness: list[Row], sessions: int, workers: int) -> float | None:
    """The harness's CPU per session-second measured closest to this shape."""
    if not harness:
        return None
    best = min(harness, key=lambda h: (h.workers != workers, abs(h.sessions - sessions)))
    return best.cpu_per_session_s


def scaling_table(rows: list[Row], harness: list[Row]) -> str:
    """duplex's rows on 1 and N workers, sessions against the cores they used."""
    mine = [r for r in rows if split_name(r.framework)[0] == "duplex" and r.sessions > 1]
    if not any(r.workers > 1 for r in mine):
        return ""
    lines = [
        "| sessions | workers | cores used | by worker | CPU s per session-s | "
        "net of the harness | lateness p99 (ms) | input p99 (ms) | output p99 (ms) | replies | "
        "turns answered | missed barge-ins | timeouts | server CPU | other load |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in sorted(mine, key=lambda r: (r.sessions, r.workers)):
        h = _harness_cpu(harness, r.sessions, r.workers)
        net = None if h is None or r.cpu_per_session_s is None else r.cpu_per_session_s - h
        lines.append(
            f"| {r.sessions} | {r.workers} | {fmt(r.cores_used, 2)} | "
            f"{' / '.join(fmt(c, 2) for c in r.cores_by_worker) or '–'} | "
            f"{fmt(r.cpu_per_session_s, 4)} | {fmt(net, 4)} | {fmt(r.lateness_p99)} | "
            f"{fmt(r.input_ms.get('p99'))} | {fmt(r.output_ms.get('p99'))} | {r.replies} | "
            f"{r.answered} / {r.turns} | {r.missed_interruptions} | {r.timeouts} | "
            f"{fmt(r.server_cpu_pct, 0)}% | {fmt(r.foreign_cpu_pct, 0)}% |"
        )
    return "\n".join(lines)


def top_targets(rows: list[Row]) -> str:
    """The issue's targets at 300 sessions, duplex on its workers (the most workers run)."""
    scaled = [r for r in rows if split_name(r.framework)[0] == "duplex" and r.workers > 1]
    top = [r for r in scaled if r.sessions == TOP_LEVEL]
    if not top:
        return ""
    r = max(top, key=lambda r: r.workers)
    late = r.lateness_p99

    def mark(ok: bool) -> str:
        return "✅" if ok else "❌"

    return "\n".join(
        [
            f"| at {TOP_LEVEL} sessions, duplex on {r.workers} workers | measured | target |",
            "|---|---:|---:|",
            f"| output-frame lateness p99 (ms) | {fmt(late)} | ≤ {TOP_LATENESS_MS:.0f} "
            f"{mark(late is not None and late <= TOP_LATENESS_MS)} |",
            f"| turns answered | {r.answered} / {r.turns} (timeouts {r.timeouts}) | every one "
            f"{mark(r.every_turn_answered)} |",
            f"| missed barge-ins | {r.missed_interruptions} of "
            f"{r.interruptions + r.missed_interruptions} | 0 "
            f"{mark(r.missed_interruptions == 0 and r.interruptions > 0)} |",
            f"| sessions started | {r.started} / {r.sessions} | all "
            f"{mark(r.started == r.sessions)} |",
            f"| cores used | {fmt(r.cores_used, 2)} | |",
        ]
    )


def _extra_session_mb(rows: list[Row], level: int) -> float | None:
    row = next((r for r in rows if r.framework == "duplex" and r.sessions == level), None)
    if row is None or row.mb_per_session is None:
        others = [r.mb_per_session for r in rows if r.framework == "duplex" and r.mb_per_session]
        return max(others) if others else None
    return row.mb_per_session


def deployed(memory: dict[str, Any] | None, rows: list[Row], level: int) -> dict[str, float]:
    """MB per call in each framework's deployment shape (see `bench.memory`)."""
    out: dict[str, float] = {}
    if not memory:
        return out
    for fw in ("livekit", "pipecat"):
        rec = memory.get(fw) or {}
        if "uss_mb" in rec:
            out[fw] = float(rec["uss_mb"])  # one process per call: all it owns
    worker = (memory.get("duplex") or {}).get("uss_mb")
    extra = _extra_session_mb(rows, level)
    if worker is not None and extra is not None:
        out["duplex"] = extra + float(worker) / SESSIONS_PER_WORKER
    return out


def memory_section(memory: dict[str, Any] | None, rows: list[Row], level: int) -> str:
    if not memory:
        return ""
    per_call = deployed(memory, rows, level)

    def rec(fw: str) -> dict[str, Any]:
        r: dict[str, Any] = memory.get(fw) or {}
        return r

    def cells(r: dict[str, Any]) -> str:
        if "rss_mb" not in r:
            return f"{r.get('error', 'not measured')} | | |"
        return f"{r['rss_mb']:.1f} | {r['uss_mb']:.1f} | {r['pss_mb']:.1f}"

    lk, pc, dx, hn = rec("livekit"), rec("pipecat"), rec("duplex"), rec("harness")
    extra = _extra_session_mb(rows, level)
    lines = [
        "| process | shape | RSS MB | USS MB | PSS MB | MB per call as deployed |",
        "|---|---|---:|---:|---:|---:|",
        f"| livekit-agents job | one process per job, forked from a forkserver with "
        f"livekit's preloads | {cells(lk)} | {fmt(per_call.get('livekit'))} (its USS) |",
        f"| livekit-agents forkserver | shared by every job, once per machine | "
        f"{cells(lk.get('forkserver') or {})} | |",
        f"| pipecat | one pipeline per process (spawned) | {cells(pc)} | "
        f"{fmt(per_call.get('pipecat'))} (its USS) |",
        f"| duplex worker, one session | many sessions per process, one worker per core | "
        f"{cells(dx)} | {fmt(per_call.get('duplex'), 2)} ({fmt(extra, 2)} per extra session + "
        f"the worker's USS over {SESSIONS_PER_WORKER} sessions) |",
        f"| harness alone | the probe's callers and clocks, no framework | {cells(hn)} | |",
    ]
    return "\n".join(lines)
