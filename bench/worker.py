"""One framework at one level of concurrency, in its own process (so CPU and memory are its own).

``python -m bench.worker --framework duplex --sessions 100 --url URL --out f.json``

Starts the sessions (one first, to measure the memory of the ones after it),
lets the callers talk for a warm-up and then a measurement window, and writes the
callers' records, the process's CPU seconds and RSS over the window, and the
output-frame lateness histogram (percentiles and counts) to ``--out``.

With ``--part K/N`` the process is worker K of N, each running its share of the
sessions on its own event loop (how duplex is deployed on N cores). Then the
window is shared: the worker prints ``READY`` after its warm-up and waits for
``GO <t>`` on stdin, a ``time.monotonic()`` instant (system-wide on Linux), so
every worker measures the same seconds and `bench.multi` can add them up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import random
import sys
import time
from typing import Any, Protocol

import numpy as np
import psutil

from . import speech
from .caller import Caller
from .clock import LatenessHistogram, Metronome, PlayoutClock

FRAMEWORKS = ("duplex", "duplex_server_vad", "livekit", "pipecat", "harness", "floor")
START_CONCURRENCY = 16
#: How long the sessions get to close after the window before the worker exits anyway.
CLOSE_TIMEOUT_S = 20.0


class Call(Protocol):
    errors: int

    def push(self, pcm: np.ndarray) -> None: ...
    async def start(self) -> None: ...
    async def aclose(self) -> None: ...


class HarnessOnly:
    """No framework: the callers' clocks and frames alone, to show what the harness costs."""

    errors = 0

    def push(self, pcm: np.ndarray) -> None:
        pass

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


class Factory:
    """Makes each session's call; session ``index`` talks to server ``index % len(urls)``."""

    def __init__(self, framework: str, url: str | list[str]) -> None:
        self.framework = framework
        self.urls = [url] if isinstance(url, str) else list(url)
        self._http: Any = None

    def make(self, sid: str, clock: PlayoutClock, index: int = 0) -> Call:
        url = self.urls[index % len(self.urls)]
        if self.framework == "harness":
            return HarnessOnly()
        if self.framework == "floor":
            import aiohttp

            from .fw_floor import FloorCall

            if self._http is None:  # no cap on sockets (aiohttp's default pool holds 100)
                self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
            return FloorCall(url, sid, clock, self._http)
        if self.framework == "livekit":
            import aiohttp

            from .fw_livekit import LivekitCall

            if self._http is None:
                self._http = aiohttp.ClientSession()
            return LivekitCall(url, sid, clock, self._http)
        if self.framework == "pipecat":
            from .fw_pipecat import PipecatCall

            return PipecatCall(url, sid, clock)
        from .fw_duplex import DuplexCall

        variant = "server_vad" if self.framework == "duplex_server_vad" else "local_vad"
        return DuplexCall(url, sid, clock, variant)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    proc = psutil.Process()
    bank = speech.load()
    noise = speech.noise_floor()
    hist = LatenessHistogram()
    part, parts = args.part
    mine = list(range(part, args.sessions, parts))  # global session numbers of this worker
    metronome = Metronome(slots=max(1, min(20, len(mine))))
    factory = Factory(args.framework, args.url)
    rng = random.Random(args.seed * 1000 + part)
    calls: list[Call] = []
    callers: list[Caller] = []
    failed: list[str] = []
    sem = asyncio.Semaphore(START_CONCURRENCY)

    async def open_one(i: int) -> None:
        sid = f"{args.tag}-{i:04d}"
        clock = PlayoutClock(hist)
        call = factory.make(sid, clock, i)
        async with sem:
            try:
                await asyncio.wait_for(call.start(), 30.0)
            except Exception as e:  # a session that cannot start is a result, not a crash
                failed.append(f"{sid}: {type(e).__name__}: {e}")
                return
        caller = Caller(i, bank, noise, clock, call.push, random.Random(rng.random()))
        calls.append(call)
        callers.append(caller)
        metronome.add(caller.tick)

    gc_pauses: list[float] = []
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        elif hist.enabled:
            gc_pauses.append(1000.0 * (time.perf_counter() - gc_started[0]))

    gc.callbacks.append(on_gc)
    metronome.start()
    gc.collect()
    rss_base = proc.memory_info().rss
    t_open = time.monotonic()
    await open_one(mine[0])
    gc.collect()
    rss_one = proc.memory_info().rss
    await asyncio.gather(*(open_one(i) for i in mine[1:]))
    started_s = time.monotonic() - t_open
    await asyncio.sleep(args.warmup)

    if parts > 1:
        await _wait_go()
    print("WINDOW_START", flush=True)
    t_start, cpu_start = time.monotonic(), _cpu(proc)
    hist.enabled = True
    metronome.max_lag_s = 0.0
    await asyncio.sleep(args.window)
    hist.enabled = False
    t_end, cpu_end = time.monotonic(), _cpu(proc)
    gc.collect()
    rss_end = proc.memory_info().rss
    print("WINDOW_END", flush=True)

    n = len(calls)
    result: dict[str, Any] = {
        "framework": args.framework,
        "sessions": len(mine),
        "workers": 1,
        "started": n,
        "failed": failed,
        "start_seconds": started_s,
        "window": [t_start, t_end],
        "cpu_seconds": cpu_end - cpu_start,
        "rss_base": rss_base,
        "rss_one": rss_one,
        "rss_end": rss_end,
        "metronome_max_lag_ms": 1000.0 * metronome.max_lag_s,
        "gc": {
            "collections": len(gc_pauses),
            "max_ms": max(gc_pauses, default=0.0),
            "total_ms": sum(gc_pauses),
        },
        "lateness": {
            "frames": hist.total,
            "p50": hist.percentile(50),
            "p95": hist.percentile(95),
            "p99": hist.percentile(99),
            "p999": hist.percentile(99.9),
        },
        "lateness_counts": {str(i): int(c) for i, c in enumerate(hist.counts) if c},
        "calls": {
            f"{args.tag}-{c.index:04d}": {**c.as_dict(), "errors": call.errors}
            for c, call in zip(callers, calls, strict=True)
        },
    }
    metronome.stop()
    for c in callers:
        c.active = False
    t_close = time.monotonic()
    # Bounded without waiting on cancellation: `wait_for` waits for a cancelled close to
    # finish, and a close that never does held a run up for good (100 sessions, shared
    # machine). What is still closing after this is left to the process's exit.
    closing = [asyncio.ensure_future(call.aclose()) for call in calls]
    if closing:
        _, pending = await asyncio.wait(closing, timeout=CLOSE_TIMEOUT_S)
        result["close_timed_out"] = bool(pending)
        result["close_pending"] = len(pending)
    result["close_seconds"] = time.monotonic() - t_close
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.shield(factory.aclose()), 5.0)
    # Whatever a framework left running ends with the process; that is not a result.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    return result


async def _run_and_exit(args: argparse.Namespace) -> None:
    result = await run(args)
    with open(args.out, "w") as f:  # noqa: ASYNC230 (the measuring is over)
        json.dump(result, f)
    sys.stdout.flush()
    # Exit from inside the loop: asyncio.run's teardown waits for every task's
    # cancellation, and leftover framework threads would hold the process too.
    os._exit(0)


async def _wait_go() -> None:
    """Tell the runner this worker is warmed up; wait for the shared window's start."""
    print("READY", flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if not line.startswith("GO "):
        raise SystemExit(f"expected GO <monotonic time>, got {line!r}")
    await asyncio.sleep(max(0.0, float(line.split()[1]) - time.monotonic()))


def _part(text: str) -> tuple[int, int]:
    k, n = (int(x) for x in text.split("/"))
    if not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"--part {text}: want K/N with 0 <= K < N")
    return k, n


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--framework", choices=FRAMEWORKS, required=True)
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--url", nargs="+", required=True, help="the servers' base URLs")
    parser.add_argument("--out", required=True)
    parser.add_argument("--tag", default="s")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--part", type=_part, default=(0, 1), help="K/N: worker K of N runs sessions K, K+N, ..."
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    if args.framework.startswith("duplex") and os.environ.get("BENCH_UVLOOP") == "1":
        from duplex.agents.loop import run as run_loop  # uvloop when installed

        run_loop(_run_and_exit(args))
    else:
        asyncio.run(_run_and_exit(args))


if __name__ == "__main__":
    main()
