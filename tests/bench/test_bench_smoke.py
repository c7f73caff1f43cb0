"""The benchmark harness end to end, small: the three frameworks at 2 sessions for a few seconds,
duplex on two worker processes too, and the memory probe of one duplex worker.

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

from bench import memory, run

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
            "floor",
            "duplex_2w",
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
            "--realtime-server",
            "off",
        ]
    )
    assert rc == 0
    (md,) = tmp_path.glob("*.md")
    assert (tmp_path / f"{md.stem}.png").stat().st_size > 10_000

    for name in ("duplex", "livekit-agents", "pipecat", "floor (bytes only)"):
        rows = [ln for ln in md.read_text().splitlines() if ln.startswith(f"| 2 | {name} |")]
        assert len(rows) == 1, md.read_text()
        cells = [c.strip() for c in rows[0].strip("|").split("|")]
        added = [c.strip() for c in cells[2].split("/")]
        assert all(NUMBER.match(c) for c in added), cells  # added latency p50 / p95 / p99
        assert NUMBER.match(cells[6]) and NUMBER.match(cells[8]), cells  # lateness, CPU

    saved = json.loads((tmp_path / "raw" / md.stem / "rows.json").read_text())
    frameworks = sorted(r["framework"] for r in saved)
    assert frameworks == ["duplex", "duplex_2w", "floor", "livekit", "pipecat"]
    for row in saved:
        assert row["started"] == 2 and row["replies"] >= 1, row
        assert row["cpu_per_session_s"] > 0
        assert all(isinstance(row[k]["p50"], (int, float)) for k in ("input_ms", "output_ms"))
        assert row["turns"] >= 1 and row["answered"] >= 1, row
        assert row["interruptions"] >= 1, row  # each framework stops its output on a barge-in

    # duplex on two workers: one session each, one shared window, one row in the scaling table.
    raw = tmp_path / "raw" / md.stem
    parts = [json.loads((raw / f"duplex_2w-2.w{k}.json").read_text()) for k in (0, 1)]
    assert [p["started"] for p in parts] == [1, 1]
    assert set(parts[0]["calls"]).isdisjoint(parts[1]["calls"])
    (two,) = [r for r in saved if r["framework"] == "duplex_2w"]
    assert two["workers"] == 2 and two["cpu_total_pct"] > 0, two
    text = md.read_text()
    assert "| 2 | duplex, 2 workers |" in text
    scaling = [ln for ln in text.splitlines() if ln.startswith("| 2 | 2 |")]
    assert len(scaling) == 1, text  # sessions 2, workers 2
    cores = scaling[0].strip("|").split("|")[2].strip()
    assert NUMBER.match(cores) and float(cores) > 0, scaling

    # The floor: each framework's CPU above a bridge that only moves the bytes.
    lines = text.splitlines()
    head = next(i for i, ln in enumerate(lines) if "| duplex above the floor |" in ln)
    above = [c.strip() for c in lines[head + 2].strip("|").split("|")]
    assert above[0] == "2" and all(NUMBER.match(c) for c in above[1:2] + above[3:6]), above


def test_memory_probe_measures_one_duplex_worker_with_a_call(tmp_path: Path) -> None:
    server = run.Server()
    try:
        out = tmp_path / "memory.json"
        rc = memory.main(
            ["--url", server.url, "--out", str(out), "--seconds", "5", "--frameworks", "duplex"]
        )
    finally:
        server.close()
    assert rc == 0
    rec = json.loads(out.read_text())["duplex"]
    assert rec["utterances"] >= 1, rec  # the caller talked to it
    assert 0 < rec["uss_mb"] <= rec["rss_mb"], rec
