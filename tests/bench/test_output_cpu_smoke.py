"""`bench.output_cpu` end to end, small: both output shapes, 2 sessions, one measured reply.

Runs the real thing (the benchmark server process, duplex sessions over sockets)
and checks that it reports CPU and event-loop callbacks per frame as numbers.
"""

from __future__ import annotations

import re

import pytest

from bench import output_cpu


@pytest.mark.parametrize("output", ["clock", "buffer"])
def test_output_cpu_measures_both_shapes(output: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--sessions", "2", "--rounds", "1", "--callbacks", "--output", output]
    assert output_cpu.main(args) == 0
    line = capsys.readouterr().out
    found = re.search(r"([\d.]+) us CPU per 20 ms frame.*; ([\d.]+) loop callbacks per frame", line)
    assert found is not None, line
    assert float(found[1]) > 0 and float(found[2]) > 0
    assert f"output {output}" in line
