"""Soak and drop probes (heavy: `make soak`): many calls for minutes, RSS and tasks reported.

50 concurrent callers (``DUPLEX_SOAK_CALLS``) for 5 minutes (``DUPLEX_SOAK_S``). Each
caller runs session after session: typed turns with spoken replies played in real
time, a tool call per session (its output must arrive exactly once), and every
fourth session hangs up mid-reply (the drop probe). The report prints RSS and the
number of live asyncio tasks over time; the checks are that no session failed
with an internal error, every tool call got one output, and once every call has
ended the process holds no more tasks than it started with.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import os
import time
from dataclasses import dataclass, field

import psutil
import pytest

from duplex.agents import (
    Agent,
    AgentSession,
    AgentStateChanged,
    EnergyVAD,
    MetricsCollected,
    SessionError,
    ToolExecuted,
    function_tool,
)
from duplex.agents.testing import MemoryTransport, Reply, ScriptedBackend, ScriptedCall

DURATION_S = float(os.environ.get("DUPLEX_SOAK_S", "300"))
CALLS = int(os.environ.get("DUPLEX_SOAK_CALLS", "50"))
SAMPLE_EVERY_S = max(1.0, min(10.0, DURATION_S / 10))


class Clerk(Agent):
    instructions = "You look things up."

    @function_tool
    async def lookup(self, n: int) -> str:
        """Look a number up."""
        await asyncio.sleep(0)
        return f"entry {n}"


@dataclass
class Stats:
    sessions: int = 0
    turns: int = 0
    drops: int = 0
    tool_outputs: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    samples: list[tuple[float, float, int]] = field(default_factory=list)


def replies(k: int) -> list[Reply]:
    return [
        Reply(text=f"Hello caller {k}.", audio_ms=200),
        Reply(calls=(ScriptedCall("lookup", {"n": k}),)),
        Reply(text=f"Entry {k} is ready.", audio_ms=200),
        Reply(text="Anything else?", audio_ms=1500),
    ]


async def one_session(k: int, stats: Stats) -> None:
    backend = ScriptedBackend(replies(k))
    transport = MemoryTransport(input_rate=48000, output_rate=48000, playout="auto")
    session = AgentSession(agent=Clerk(), backend=backend, vad=EnergyVAD())
    session.on(SessionError, lambda e: stats.errors.update([e.code]))
    session.on(ToolExecuted, lambda e: stats.tool_outputs.update([e.call.call_id]))
    await session.start(transport)
    stats.sessions += 1
    try:
        for text in ("hi", "look up my entry"):
            done = session.next_event(MetricsCollected)
            await session.send_text(text)
            await asyncio.wait_for(done, 30)
            stats.turns += 1
        if k % 4 == 0:  # the drop probe: the caller hangs up while the agent speaks
            speaking = session.next_event(AgentStateChanged, lambda e: e.new == "speaking")
            await session.send_text("and then?")
            await asyncio.wait_for(speaking, 30)
            await transport.aclose()
            await asyncio.wait_for(session.closed.wait(), 30)
            stats.drops += 1
    finally:
        await asyncio.wait_for(session.aclose(), 30)


async def sampler(stats: Stats, stop: asyncio.Event, proc: psutil.Process) -> None:
    t0 = time.monotonic()
    while not stop.is_set():
        stats.samples.append(
            (time.monotonic() - t0, proc.memory_info().rss / 2**20, len(asyncio.all_tasks()))
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_EVERY_S)


@pytest.mark.heavy
@pytest.mark.timeout(DURATION_S + 300)
async def test_soak_calls_for_minutes() -> None:
    proc = psutil.Process()
    gc.collect()
    tasks_before = len(asyncio.all_tasks())
    rss_before = proc.memory_info().rss / 2**20
    stats = Stats()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DURATION_S
    counter = iter(range(10**9))

    async def caller() -> None:
        while loop.time() < deadline:
            await one_session(next(counter), stats)

    stop = asyncio.Event()
    sampling = asyncio.create_task(sampler(stats, stop, proc))
    await asyncio.gather(*(caller() for _ in range(CALLS)))
    stop.set()
    await sampling
    for _ in range(20):  # let the last closes' callbacks run
        await asyncio.sleep(0)
    gc.collect()
    tasks_after = len(asyncio.all_tasks())
    rss_after = proc.memory_info().rss / 2**20

    print(f"\nsoak: {CALLS} concurrent calls for {DURATION_S:g} s")
    print(f"  sessions {stats.sessions}, turns {stats.turns}, drops mid-reply {stats.drops}")
    print(f"  tool outputs {sum(stats.tool_outputs.values())}, errors {dict(stats.errors)}")
    print("  t_s      rss_mib  tasks")
    for t, rss, tasks in stats.samples:
        print(f"  {t:7.1f}  {rss:7.1f}  {tasks:5d}")
    print(f"  rss {rss_before:.1f} -> {rss_after:.1f} MiB; tasks {tasks_before} -> {tasks_after}")

    assert stats.sessions >= CALLS and stats.drops > 0
    assert "internal_error" not in stats.errors and "tool_failed" not in stats.errors
    assert stats.tool_outputs and set(stats.tool_outputs.values()) == {1}  # each output once
    assert tasks_after <= tasks_before, "tasks left behind after every call ended"
