"""duplex on N workers: the records of N worker processes make one level's row."""

from __future__ import annotations

import random
from typing import Any

from bench.analysis import analyse
from bench.clock import LatenessHistogram
from bench.multi import framework_name, merge, split_name


def _record(part: int, lateness_s: list[float], t0: float, cpu: float) -> dict[str, Any]:
    hist = LatenessHistogram()
    hist.enabled = True
    for v in lateness_s:
        hist.add(v)
    sid = f"duplex_2w-4-{part:04d}"
    return {
        "framework": "duplex",
        "sessions": 2,
        "workers": 1,
        "started": 2,
        "failed": [],
        "start_seconds": 1.0 + part,
        "window": [t0 + 0.001 * part, t0 + 10.0 - 0.001 * part],
        "cpu_seconds": cpu,
        "rss_base": 50 * 2**20,
        "rss_one": 60 * 2**20,
        "rss_end": 61 * 2**20,
        "metronome_max_lag_ms": 3.0 * (part + 1),
        "gc": {"collections": 1, "max_ms": 1.0 + part, "total_ms": 1.0},
        "lateness": {"frames": hist.total, "p99": hist.percentile(99)},
        "lateness_counts": {str(i): int(c) for i, c in enumerate(hist.counts) if c},
        "calls": {
            sid: {
                "utterances": [
                    {"kind": "question", "onset_at": t0 + 1.0, "last_speech_at": t0 + 2.0}
                ],
                "segments": [],
                "stops": [],
                "timeouts": 0,
                "errors": 0,
            }
        },
    }


def test_names_carry_the_worker_count() -> None:
    assert split_name(framework_name("duplex", 2)) == ("duplex", 2)
    assert split_name(framework_name("duplex", 1)) == ("duplex", 1)
    assert split_name("duplex_server_vad") == ("duplex_server_vad", 1)
    assert split_name("harness_3w") == ("harness", 3)


def test_merge_adds_cpu_and_memory_and_pools_lateness() -> None:
    rng = random.Random(5)
    a = [rng.uniform(0.0, 0.004) for _ in range(2000)]
    b = [rng.uniform(0.0, 0.060) for _ in range(500)]  # one worker fell behind
    parts = [_record(0, a, 100.0, 3.0), _record(1, b, 100.0, 5.0)]
    merged = merge(parts, "duplex_2w")

    pooled = LatenessHistogram()
    pooled.enabled = True
    for v in a + b:
        pooled.add(v)
    assert merged["lateness"]["p99"] == pooled.percentile(99)
    assert merged["lateness"]["p99"] > parts[0]["lateness"]["p99"]
    assert merged["cpu_seconds"] == 8.0
    assert merged["sessions"] == merged["started"] == 4 and merged["workers"] == 2
    assert merged["window"] == [100.001, 109.999]  # only what both measured
    assert set(merged["calls"]) == set(parts[0]["calls"]) | set(parts[1]["calls"])

    stats = {"sessions": {}, "errors": {}}
    row = analyse(merged, stats)
    assert row.framework == "duplex_2w" and row.workers == 2
    # Each worker's first session is its baseline: 2 MB grown over 2 extra sessions.
    assert row.mb_per_session == 1.0
    assert row.cores_used is not None and abs(row.cores_used - 8.0 / 9.998) < 1e-9
    # The server answered nothing: the turns are there, none answered.
    assert row.turns == 2 and row.answered == 0 and not row.every_turn_answered


def test_one_worker_is_its_own_record() -> None:
    part = _record(0, [0.001], 5.0, 1.0)
    assert merge([part], "duplex") == {**part, "framework": "duplex"}
