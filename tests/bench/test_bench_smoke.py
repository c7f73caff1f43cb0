"""The benchmark harness end to end, small: the three frameworks at 2 sessions for a few seconds.

It runs the real thing (the benchmark server process, a worker process, the
analysis and the report) so that `make bench` keeps working; the numbers it
produces here are not judged, only that there are numbers.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from bench import run

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="the benchmark's speech is made with espeak-ng"
)

NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def test_quick_run_of_three_frameworks_writes_a_table_with_numbers(tmp_path: Path) -> None:
    rc = run.main(
        [
            "--quick",
            "--frameworks",
            "duplex",
            "livekit",
            "pipecat",
            "--levels",
            "2",
            "--window",
            "4",
            "--warmup",
            "1",
            "--out",
            str(tmp_path),
            "--no-publish",
            "--no-renice",
        ]
    )
    assert rc == 0
    (md,) = tmp_path.glob("*.md")
    assert (tmp_path / f"{md.stem}.png").stat().st_size > 10_000

    for name in ("duplex", "livekit-agents", "pipecat"):
        rows = [ln for ln in md.read_text().splitlines() if ln.startswith(f"| 2 | {name} |")]
        assert len(rows) == 1, md.read_text()
        cells = [c.strip() for c in rows[0].strip("|").split("|")]
        added = [c.strip() for c in cells[2].split("/")]
        assert all(NUMBER.match(c) for c in added), cells  # added latency p50 / p95 / p99
        assert NUMBER.match(cells[6]) and NUMBER.match(cells[8]), cells  # lateness, CPU

    saved = json.loads((tmp_path / "raw" / md.stem / "rows.json").read_text())
    assert sorted(r["framework"] for r in saved) == ["duplex", "livekit", "pipecat"]
    for row in saved:
        assert row["started"] == 2 and row["replies"] >= 1, row
        assert row["cpu_per_session_s"] > 0
        assert all(isinstance(row[k]["p50"], (int, float)) for k in ("input_ms", "output_ms"))
