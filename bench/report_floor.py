"""The results file's floor section: each framework against a bridge that only moves bytes.

`bench.fw_floor` does the least a realtime bridge in Python can do (decimate,
base64, one append per 20 ms, decode, play, clear on speech). Its CPU is what the
wire protocol, asyncio, the caller harness and the speaker cost at that level; a
framework's figure above it is the framework's own work. A CPU target below the
floor cannot be met by any framework speaking this protocol at this cadence.
"""

from __future__ import annotations

from .analysis import Row
from .multi import split_name
from .report_scaling import NAMES, find_row, fmt

FRAMEWORKS = ("duplex", "livekit", "pipecat")


def floor_table(rows: list[Row]) -> str:
    """Per level: the floor's CPU, each framework's above it, duplex's share of livekit's."""
    levels = sorted({r.sessions for r in rows if r.framework == "floor"})
    if not levels:
        return ""
    lines = [
        "| sessions | floor CPU s/session-s | floor input / output p99 (ms) | "
        + " | ".join(f"{NAMES[f]} above the floor" for f in FRAMEWORKS)
        + " | duplex / livekit above the floor |",
        "|---:|---:|---:|" + "---:|" * (len(FRAMEWORKS) + 1),
    ]
    for n in levels:
        fl = find_row(rows, "floor", n)
        assert fl is not None
        base = fl.cpu_per_session_s
        above: dict[str, float | None] = {}
        for fw in FRAMEWORKS:
            r = find_row(rows, fw, n)
            cpu = None if r is None else r.cpu_per_session_s
            above[fw] = None if cpu is None or base is None else cpu - base
        d, lk = above["duplex"], above["livekit"]
        ratio = "–" if d is None or not lk or lk <= 0 else f"{d / lk:.2f}"
        lines.append(
            f"| {n} | {fmt(base, 4)} | {fmt(fl.input_ms.get('p99'), 1)} / "
            f"{fmt(fl.output_ms.get('p99'), 1)} | "
            + " | ".join(fmt(above[f], 4) for f in FRAMEWORKS)
            + f" | {ratio} |"
        )
    return "\n".join(lines)


def floor_top(rows: list[Row], sessions: int) -> str:
    """The floor on N workers at the top level, beside duplex on as many (the 300-session test)."""
    mine = [
        r
        for r in rows
        if r.sessions == sessions
        and r.workers > 1
        and split_name(r.framework)[0] in ("floor", "duplex")
    ]
    if not any(split_name(r.framework)[0] == "floor" for r in mine):
        return ""
    lines = [
        f"| at {sessions} sessions | workers | started | cores used | CPU s/session-s | "
        "lateness p99 (ms) | turns answered | missed barge-ins | timeouts |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in sorted(mine, key=lambda r: r.framework):
        lines.append(
            f"| {split_name(r.framework)[0]} | {r.workers} | {r.started} | "
            f"{fmt(r.cores_used, 2)} | {fmt(r.cpu_per_session_s, 4)} | "
            f"{fmt(r.lateness_p99, 1)} | {r.answered} / {r.turns} | "
            f"{r.missed_interruptions} of {r.interruptions + r.missed_interruptions} | "
            f"{r.timeouts} |"
        )
    return "\n".join(lines)


def floor_parts(rows: list[Row]) -> list[str]:
    """The section: the floor per level, then its run on workers at the top level."""
    table = floor_table(rows)
    if not table:
        return []
    parts = [
        "\n\n## The floor: a bridge that only moves the bytes\n\n",
        "`bench/fw_floor.py` decimates each caller frame by slicing, sends it as a templated "
        "append on the socket, decodes each reply delta into 20 ms frames for the speaker and "
        "clears it on `speech_started`: no VAD, no filter, no chat context, no reply "
        "bookkeeping. Its CPU is the cost of the protocol at one append per 20 ms on asyncio + "
        "aiohttp plus the harness and speaker every framework shares; *above the floor* is "
        "each framework's own work.\n\n",
        table,
    ]
    top = max((r.sessions for r in rows if r.workers > 1), default=None)
    at_top = floor_top(rows, top) if top is not None else ""
    if at_top:
        parts += ["\n\n", at_top]
    return parts
