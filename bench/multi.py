"""duplex on N worker processes: run names, and one level's records from N workers made one.

duplex is deployed as N processes, one event loop each, on N cores. In the benchmark
each worker process runs its share of the sessions and their callers against the same
server, over the same window (see `bench.worker`'s ``--part``). Adding their records up
gives one row judged like any other: CPU is the sum of the workers' processes over the
shared window, lateness percentiles come from the sum of their histograms, memory per
extra session from the sum of their growth.
"""

from __future__ import annotations

import re
from typing import Any

from .clock import LatenessHistogram

_NAME = re.compile(r"^(?P<fw>[a-z_]+?)_(?P<n>\d+)w$")


def framework_name(framework: str, workers: int) -> str:
    """The name a run carries in records and tables: ``duplex`` or ``duplex_2w``."""
    return framework if workers <= 1 else f"{framework}_{workers}w"


def split_name(name: str) -> tuple[str, int]:
    """``duplex_2w`` -> ("duplex", 2); a name without a worker count runs in one process."""
    m = _NAME.match(name)
    if m is None:
        return name, 1
    return m["fw"], int(m["n"])


def merge(parts: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """One worker record for the whole level, from the records of its N worker processes."""
    if len(parts) == 1:
        return {**parts[0], "framework": name}
    hist = LatenessHistogram()
    for p in parts:
        for i, c in p.get("lateness_counts", {}).items():
            hist.counts[int(i)] += int(c)
    starts = [float(p["window"][0]) for p in parts]
    ends = [float(p["window"][1]) for p in parts]
    gcs = [p.get("gc", {}) for p in parts]
    return {
        "framework": name,
        "sessions": sum(int(p["sessions"]) for p in parts),
        "workers": len(parts),
        "started": sum(int(p["started"]) for p in parts),
        "failed": [f for p in parts for f in p["failed"]],
        "start_seconds": max(float(p["start_seconds"]) for p in parts),
        # The shared window: only what every worker measured.
        "window": [max(starts), min(ends)],
        # CPU over each worker's own window (equal to the shared one within a few ms).
        "cpu_seconds": sum(float(p["cpu_seconds"]) for p in parts),
        "cpu_seconds_by_worker": [float(p["cpu_seconds"]) for p in parts],
        "sessions_by_worker": [int(p["started"]) for p in parts],
        "rss_base": sum(int(p["rss_base"]) for p in parts),
        "rss_one": sum(int(p["rss_one"]) for p in parts),
        "rss_end": sum(int(p["rss_end"]) for p in parts),
        "rss_one_by_worker": [int(p["rss_one"]) for p in parts],
        "metronome_max_lag_ms": max(float(p["metronome_max_lag_ms"]) for p in parts),
        "gc": {
            "collections": sum(int(g.get("collections", 0)) for g in gcs),
            "max_ms": max(float(g.get("max_ms", 0.0)) for g in gcs),
            "total_ms": sum(float(g.get("total_ms", 0.0)) for g in gcs),
        },
        "lateness": {
            "frames": hist.total,
            "p50": hist.percentile(50),
            "p95": hist.percentile(95),
            "p99": hist.percentile(99),
            "p999": hist.percentile(99.9),
        },
        "calls": {sid: c for p in parts for sid, c in p["calls"].items()},
    }
