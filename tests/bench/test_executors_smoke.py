"""bench/executors.py end to end, small: one call per executor, so `make bench` keeps working.

The real thing runs (the benchmark server in its own process, livekit-agents' pool,
a fresh driver per mode); the figures are not judged here, only that every call was
answered and every measure was taken.
"""

from __future__ import annotations

import tempfile

import pytest

from bench import executors

pytestmark = pytest.mark.timeout(180)


# A process job costs ~20 s here (forkserver, imports): thread covers the same pool code.
@pytest.mark.parametrize(
    "mode", [pytest.param("process", marks=pytest.mark.heavy), "thread", "loop"]
)
def test_one_call_per_executor_is_answered_and_measured(mode: str) -> None:
    server, url = executors.start_server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            row = executors.measure_apart(mode, 1, url, 4.0, tmp)
    finally:
        server.terminate()
        server.wait(10)
    assert row["mode"] == mode and row["calls"] == 1 and row["processes"] == 1
    assert row["heard_s_min"] >= 2.0  # the reply to the first turn was played
    assert row["rss_mb_per_call"] > 0 and row["cpu_s_per_call_s"] > 0
    assert 0 < row["start_ms_max"] < 30_000
    if mode != "loop":
        assert row["warm_cpu_s_per_executor"] > 0
    table = executors.table(
        {
            "rows": [row],
            "cold_start_ms": {"process": 1.0, "thread": 1.0},
            "cores": 2,
            "seconds": 4.0,
        }
    )
    assert f"| {mode} | 1 | 1 |" in table
