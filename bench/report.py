"""The results file (markdown), the plot (PNG), and their copy shown in docs/performance.md."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import config as C
from .analysis import Row
from .multi import split_name
from .report_floor import floor_parts
from .report_scaling import (
    NAMES,
    deployed,
    display_name,
    find_row,
    memory_section,
    scaling_table,
    top_targets,
)

if TYPE_CHECKING:
    from .run import Plan

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "performance.md"
DOC_IMG = ROOT / "docs" / "img" / "bench-latest.png"
START, END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"

#: (label, getter, target for duplex, livekit's reference figure, lower is better)
Getter = Callable[[Row], "float | None"]
SUMMARY: list[tuple[str, Getter, float | None, str]] = [
    ("input path p99 (ms)", lambda r: r.input_ms.get("p99"), 25.0, "231"),
    ("output path p99 (ms)", lambda r: r.output_ms.get("p99"), 5.0, "234"),
    ("added latency p50 (ms)", lambda r: r.added_ms.get("p50"), None, ""),
    ("added latency p95 (ms)", lambda r: r.added_ms.get("p95"), None, ""),
    ("added latency p99 (ms)", lambda r: r.added_ms.get("p99"), None, ""),
    ("interruption p50 (ms)", lambda r: r.interrupt_ms.get("p50"), None, ""),
    ("interruption p95 (ms)", lambda r: r.interrupt_ms.get("p95"), 120.0, "234"),
    ("CPU s per session-second", lambda r: r.cpu_per_session_s, 0.0025, "0.0043"),
    ("MB per extra session", lambda r: r.mb_per_session, 0.5, "~0.9"),
    ("output-frame lateness p99 (ms)", lambda r: r.lateness_p99, C.LATENESS_LIMIT_MS, ""),
]


def _f(v: float | None, digits: int = 1) -> str:
    if v is None:
        return "–"
    if abs(v) < 0.1 and v != 0:
        return f"{v:.4f}"
    return f"{v:.{digits}f}"


def _late(v: float | None) -> str:
    """Lateness is binned up to 2 s; the last bin means "2 s or more"."""
    if v is not None and v >= 2000.0:
        return "≥ 2000"
    return _f(v)


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}"


def capacity(rows: list[Row], fw: str) -> str:
    """The most sessions tested before p99 output-frame lateness passed the limit."""
    mine = sorted((r for r in rows if r.framework == fw), key=lambda r: r.sessions)
    if not mine:
        return "–"
    best: int | None = None
    for r in mine:
        if not r.healthy():
            low = best if best is not None else 0
            return f"{low} (broke at {r.sessions}: p99 lateness {_late(r.lateness_p99)} ms)"
        best = r.sessions
    return f"≥ {best} (the most tested)"


#: duplex's CPU per session-second against livekit-agents' in the same run.
CPU_RATIO_TARGET = 1 / 3


def summary_table(
    rows: list[Row],
    level: int,
    memory: dict[str, Any] | None = None,
    harness: list[Row] | None = None,
) -> str:
    d, lk = find_row(rows, "duplex", level), find_row(rows, "livekit", level)
    pc = find_row(rows, "pipecat", level)
    lines = [
        f"| at {level} sessions | duplex | livekit-agents | pipecat | duplex / livekit | "
        "duplex / pipecat | duplex target | livekit reference |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, get, target, ref in SUMMARY:
        a = get(d) if d else None
        b = get(lk) if lk else None
        c = get(pc) if pc else None
        met = ""
        if target is not None and a is not None:
            met = " ✅" if a <= target else " ❌"
        digits = 4 if "CPU" in label else 1
        lines.append(
            f"| {label} | {_f(a, digits)} | {_f(b, digits)} | {_f(c, digits)} | "
            f"{_ratio(a, b)} | {_ratio(a, c)} | "
            f"{'' if target is None else '≤ ' + _f(target, digits)}{met} | {ref} |"
        )
    cpu = [r.cpu_per_session_s if r else None for r in (d, lk, pc)]
    ratio = None if cpu[0] is None or not cpu[1] else cpu[0] / cpu[1]
    met = "" if ratio is None else (" ✅" if ratio <= CPU_RATIO_TARGET else " ❌")
    lines.append(
        f"| CPU against livekit-agents' (ratio) | | | | {_ratio(cpu[0], cpu[1])} | "
        f"{_ratio(cpu[0], cpu[2])} | ≤ 0.33{met} | |"
    )
    alone = next((h for h in harness or [] if h.sessions == level and h.workers == 1), None)
    fl = find_row(rows, "floor", level)
    for label, less in (
        ("net of the harness ({})", alone.cpu_per_session_s if alone else None),
        ("above the floor (bytes only: {})", fl.cpu_per_session_s if fl else None),
    ):
        if less is not None:
            lines.append(_cpu_less(label, less, cpu))
    per_call = deployed(memory, rows, level)
    if per_call:
        dm, lm, pm = (per_call.get(k) for k in ("duplex", "livekit", "pipecat"))
        lines.append(
            f"| MB per call as deployed | {_f(dm, 2)} | {_f(lm)} | {_f(pm)} | {_ratio(dm, lm)} | "
            f"{_ratio(dm, pm)} | | |"
        )
    most = capacity(rows, "duplex")
    for fw in sorted({r.framework for r in rows if r.framework.startswith("duplex_")}):
        base, workers = split_name(fw)
        if base == "duplex" and workers > 1:
            most += f"; on {workers} workers {capacity(rows, fw)}"
    lines.append(
        f"| most sessions before p99 lateness > {C.LATENESS_LIMIT_MS:.0f} ms | "
        f"{most} | {capacity(rows, 'livekit')} | "
        f"{capacity(rows, 'pipecat')} | | | ≥ 300 | 100–200 |"
    )
    return "\n".join(lines)


def _cpu_less(label: str, base: float, cpu: list[float | None]) -> str:
    """A summary row of each framework's CPU less ``base`` (the harness, or the floor);
    ``label`` shows ``base`` at its ``{}``."""
    net = [None if c is None else c - base for c in cpu]
    return (
        f"| CPU s per session-second, {label.format(_f(base, 4))} | {_f(net[0], 4)} | "
        f"{_f(net[1], 4)} | {_f(net[2], 4)} | {_ratio(net[0], net[1])} | "
        f"{_ratio(net[0], net[2])} | | |"
    )


def levels_table(rows: list[Row]) -> str:
    head = (
        "| sessions | framework | added p50 / p95 / p99 | input p99 | output p99 | "
        "interruption p50 / p95 | lateness p99 | max stall | CPU s/session-s | MB/extra session | "
        "replies | missed barge-ins | timeouts | server errors | server CPU | other load |"
    )
    lines = [head, _sep(head)]
    for r in sorted(rows, key=lambda r: (r.sessions, r.framework)):
        errs = ", ".join(f"{k} {v}" for k, v in sorted(r.server_errors.items())) or "0"
        a = r.added_ms
        lines.append(
            f"| {r.sessions} | {display_name(r.framework, NAMES)} | "
            f"{_f(a.get('p50'))} / {_f(a.get('p95'))} / {_f(a.get('p99'))} | "
            f"{_f(r.input_ms.get('p99'))} | {_f(r.output_ms.get('p99'))} | "
            f"{_f(r.interrupt_ms.get('p50'))} / {_f(r.interrupt_ms.get('p95'))} | "
            f"{_late(r.lateness_p99)} | {_f(r.loop_stall_ms, 0)} | "
            f"{_f(r.cpu_per_session_s, 4)} | {_f(r.mb_per_session, 2)} | "
            f"{r.replies} | {r.missed_interruptions} | {r.timeouts} | {errs} | "
            f"{_f(r.server_cpu_pct, 0)}% | {_f(r.foreign_cpu_pct, 0)}% |"
        )
    return "\n".join(lines)


def _sep(head: str) -> str:
    return "|" + "---|" * (head.count("|") - 1)


def ratio_table(rows: list[Row]) -> str:
    levels = sorted({r.sessions for r in rows if r.framework == "livekit"})
    lines = [
        "| sessions | added p99 | input p99 | output p99 | interruption p95 | CPU | memory |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in levels:
        d, lk = find_row(rows, "duplex", n), find_row(rows, "livekit", n)
        if d is None or lk is None:
            continue
        lines.append(
            f"| {n} | {_ratio(d.added_ms.get('p99'), lk.added_ms.get('p99'))} | "
            f"{_ratio(d.input_ms.get('p99'), lk.input_ms.get('p99'))} | "
            f"{_ratio(d.output_ms.get('p99'), lk.output_ms.get('p99'))} | "
            f"{_ratio(d.interrupt_ms.get('p95'), lk.interrupt_ms.get('p95'))} | "
            f"{_ratio(d.cpu_per_session_s, lk.cpu_per_session_s)} | "
            f"{_ratio(d.mb_per_session, lk.mb_per_session)} |"
        )
    return "\n".join(lines)


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(2, 3, figsize=(15, 7.5))
    panels: list[tuple[Any, str, Getter, float | None]] = [
        (axes[0][0], "added latency p99 (ms)", lambda r: r.added_ms.get("p99"), None),
        (axes[0][1], "interruption p95 (ms)", lambda r: r.interrupt_ms.get("p95"), None),
        (axes[0][2], "input path p99 (ms)", lambda r: r.input_ms.get("p99"), None),
        (axes[1][0], "CPU seconds per session-second", lambda r: r.cpu_per_session_s, None),
        (
            axes[1][1],
            "output-frame lateness p99 (ms)",
            lambda r: r.lateness_p99,
            C.LATENESS_LIMIT_MS,
        ),
        (axes[1][2], "cores used (CPU s / wall s)", lambda r: r.cores_used, None),
    ]
    # Three frameworks, and duplex on every worker count run (the scaling).
    styles: dict[str, tuple[str, str, str]] = {
        "duplex": ("tab:blue", "o", "-"),
        "livekit": ("tab:orange", "s", "-"),
        "pipecat": ("tab:green", "^", "-"),
        "floor": ("tab:gray", "x", ":"),
    }
    for fw in sorted({r.framework for r in rows if r.framework.startswith("duplex_")}):
        if fw.endswith("w"):
            styles[fw] = ("tab:purple", "D", "--")
    for ax, title, get, limit in panels:
        for fw, (color, marker, line) in styles.items():
            pts = sorted((r.sessions, get(r)) for r in rows if r.framework == fw)
            xs = [x for x, y in pts if y is not None]
            ys = [y for _, y in pts if y is not None]
            if xs:
                label = display_name(fw, NAMES)
                ax.plot(xs, ys, marker=marker, color=color, linestyle=line, label=label)
        if limit is not None:
            ax.axhline(limit, color="gray", linestyle="--", linewidth=1, label="limit")
        if "latency" in title or "lateness" in title or "path" in title:
            ax.set_yscale("log")  # a saturated level is seconds late; keep the rest readable
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("concurrent sessions")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle(
        f"duplex, livekit-agents and pipecat: one OpenAI-protocol server, {os.cpu_count()} cores"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except OSError:
        rev = "?"

    def ver(pkg: str) -> str:
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return "?"

    return (
        f"{os.cpu_count()} cores ({model or platform.machine()}), Python "
        f"{platform.python_version()}, duplex at {rev} (+ working tree), livekit-agents "
        f"{ver('livekit-agents')}, livekit-plugins-openai {ver('livekit-plugins-openai')}, "
        f"pipecat-ai {ver('pipecat-ai')}"
    )


def write(
    plan: Plan,
    rows: list[Row],
    profile_md: str | None,
    harness: list[Row],
    elapsed: float,
    where: str | None = None,
    memory: dict[str, Any] | None = None,
) -> Path:
    where = where or machine()
    plan.out.mkdir(parents=True, exist_ok=True)
    png = plan.out / f"{plan.date}.png"
    plot(rows, png)
    (plan.raw / "rows.json").write_text(json.dumps([r.as_dict() for r in rows], indent=1))
    saved = {
        "rows": [r.as_dict() for r in rows],
        "profile_md": profile_md,
        "harness": [h.as_dict() for h in harness],
        "memory": memory,
        "elapsed": elapsed,
        "reruns": plan.reruns,
        "machine": where,
    }
    (plan.raw / "run.json").write_text(json.dumps(saved, indent=1))
    common = sorted({r.sessions for r in rows if r.framework == "livekit"})
    level = 100 if 100 in common else (common[-1] if common else rows[-1].sessions)
    body = results_body(rows, level, png.name, profile_md, harness, memory)
    if plan.reruns:
        body += "\n## Busy machine\n\nMeasured twice (the quieter try is shown): "
        body += "; ".join(plan.reruns) + ".\n"
    md = plan.out / f"{plan.date}.md"
    md.write_text(
        f"# Benchmark {plan.date}\n\n{where}. Whole run {elapsed / 60:.1f} min. "
        f"Method: docs/performance.md.\n\n{body}"
    )
    if plan.publish:
        DOC_IMG.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, DOC_IMG)
        publish(rows, level, plan.date, where, harness, memory)
    return md


def rewrite(plan: Plan) -> Path:
    """Write the results file, plot and docs again from a run's saved records."""
    saved = json.loads((plan.raw / "run.json").read_text())
    rows = [Row(**r) for r in saved["rows"]]
    kept = saved.get("harness") or []
    harness = [Row(**h) for h in (kept if isinstance(kept, list) else [kept])]
    plan.reruns = list(saved.get("reruns", []))
    elapsed = float(saved["elapsed"])
    return write(
        plan,
        rows,
        saved["profile_md"],
        harness,
        elapsed,
        saved.get("machine"),
        memory=saved.get("memory"),
    )


def scaling_parts(
    rows: list[Row], harness: list[Row], memory: dict[str, Any] | None, level: int
) -> list[str]:
    """The sections on duplex's workers and on memory as deployed (empty when not measured)."""
    parts: list[str] = []
    top = top_targets(rows)
    if top:
        parts += ["\n\n## At 300 sessions on duplex's workers\n\n", top]
    scaling = scaling_table(rows, harness)
    if scaling:
        parts += [
            "\n\n## Scaling: duplex on 1 and more worker processes\n\n",
            "Cores used are the CPU seconds of the framework's processes (callers and clocks "
            "included) over the window's wall seconds; *net of the harness* takes off the "
            "harness's own CPU per session-second, measured alone in the same shape.\n\n",
            scaling,
        ]
    mem = memory_section(memory, rows, level)
    if mem:
        parts += [
            "\n\n## Memory as deployed\n\n",
            "One call in a process made the way each framework's runner makes it "
            "(`bench/memory.py`). USS is what no other process shares: for a process per call "
            "it is what one more call costs.\n\n",
            mem,
        ]
    return parts


def results_body(
    rows: list[Row],
    level: int,
    png: str,
    profile_md: str | None,
    harness: list[Row],
    memory: dict[str, Any] | None = None,
) -> str:
    parts = [
        "## Summary\n",
        summary_table(rows, level, memory, harness),
        *scaling_parts(rows, harness, memory, level),
        *floor_parts(rows),
        "\n\n## duplex / livekit ratios (below 1 means duplex is better)\n",
        ratio_table(rows),
        "\n\n## Every level\n",
        levels_table(rows),
        f"\n\n![latency and CPU against sessions]({png})\n",
    ]
    if harness:
        alone = "; ".join(
            f"{_f(h.cpu_per_session_s, 4)} at {h.sessions} sessions on {h.workers} "
            f"process{'es' if h.workers > 1 else ''}"
            for h in harness
        )
        parts.append(
            "\n## The harness alone\n\nCallers and clocks with no framework cost, in CPU s "
            f"per session-second: {alone}. Every framework's CPU figure includes it.\n"
        )
    if profile_md:
        parts += [f"\n## Profile: duplex at {level} sessions (py-spy)\n\n", profile_md, "\n"]
    return "".join(parts)


def publish(
    rows: list[Row],
    level: int,
    date: str,
    where: str,
    harness: list[Row] | None = None,
    memory: dict[str, Any] | None = None,
) -> None:
    """Put the latest summary and plot between the markers in docs/performance.md."""
    if not DOC.exists():
        return
    text = DOC.read_text()
    scaling = "".join(
        [*scaling_parts(rows, harness or [], memory, level), *floor_parts(rows)]
    ).replace("\n## ", "\n### ")
    block = (
        f"{START}\n_Latest run: {date} ({where}); full results in "
        f"`bench/results/{date}.md`._\n\n{summary_table(rows, level, memory, harness)}{scaling}\n\n"
        f"### Every level\n\n{levels_table(rows)}\n\n"
        f"![latency and CPU against sessions](img/bench-latest.png)\n{END}"
    )
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text)
