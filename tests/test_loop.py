"""`duplex.agents.loop`: uvloop when installed and wanted, and the shared lag signal."""

from __future__ import annotations

import asyncio
import time

import pytest

from duplex.agents.loop import UVLOOP_ENV, loop_lag, loop_name, run, uvloop_available


async def _which() -> str:
    await asyncio.sleep(0)
    return loop_name()


def test_run_returns_the_result_on_the_standard_loop_when_told(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(UVLOOP_ENV, "0")
    assert run(_which()) == "asyncio"


@pytest.mark.skipif(not uvloop_available(), reason="the uvloop extra is not installed")
def test_run_uses_uvloop_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(UVLOOP_ENV, raising=False)
    assert run(_which()) == "uvloop"


def test_lag_reports_a_stalled_loop_and_recovers() -> None:
    async def main() -> tuple[bool, bool, bool]:
        lag = loop_lag()
        assert loop_lag() is lag  # one per loop
        await asyncio.sleep(0.05)
        time.sleep(0.05)  # noqa: ASYNC251 - the stall under test
        stalled = lag.behind(0.008)
        await asyncio.sleep(0.001)  # the overdue tick (due first) runs, records its lateness
        recorded = lag.lag > 0.008
        # an idle loop runs the next ticks on time again
        for _ in range(200):
            await asyncio.sleep(0.025)
            if not lag.behind(0.008):
                return stalled, recorded, True
        return stalled, recorded, False

    assert run(main()) == (True, True, True)
