"""`make bench`, executors section: how `agent run` should run its jobs.

livekit-agents runs each job (one call) through a job executor: ``process`` (a
prewarmed process per job, the production default) or ``thread`` (a thread with its
own event loop, in the worker process). duplex's own servers (`agent dev`, `agent
phone`) run many calls on one event loop per core instead (``loop`` here). Each
mode runs the same duplex call: an `AgentSession` on `OpenAIRealtime` against the
benchmark's realtime server (bench/server.py, its own process), a caller speaking
1 s of every 5 s at 1x, the reply played on a 1x clock. No LiveKit server is
needed: jobs are launched through livekit-agents' own process pool (``ProcPool``)
as fake jobs, exactly as its worker launches them, minus the room.

Measured per mode and number of concurrent calls N:

- start: request (``launch_job``, or the call handed to the loop) -> session
  connected, over prewarmed executors; ``cold``: one job with no idle process
  (spawn + initialize + start);
- memory: RSS (and USS, the pages only that process holds) of the whole tree
  (driver, forkserver, job processes) with N calls up, minus the tree before the
  pool started, per call;
- CPU: user + system seconds of the tree over a steady window / (N x window s).

    python -m bench.executors                 # N = 1, 4, 8; 12 s calls
    python -m bench.executors --quick         # N = 1, 4; 8 s calls
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

RESULTS = Path(__file__).parent / "results"
RATE = 48000
FRAME = RATE // 50  # 20 ms
CYCLE_FRAMES = 250  # 5 s: 1 s of speech, 4 s of silence (the reply plays meanwhile)
SPEECH_FRAMES = 50


# --- one call, the same in every mode ---------------------------------------------------
def _frames() -> tuple[Any, Any]:
    from duplex.agents import AudioFrame

    t = np.arange(FRAME) / RATE
    speech = (0.3 * 32767 * np.sin(2 * np.pi * 220 * t)).astype(np.int16).reshape(-1, 1)
    quiet = np.zeros((FRAME, 1), np.int16)
    return AudioFrame(speech, RATE, 1), AudioFrame(quiet, RATE, 1)


async def run_call(url: str, seconds: float, out: str, call_id: str, requested: float) -> None:
    """One duplex call; appends ``ready`` and ``done`` records (JSON lines) to ``out``."""
    from duplex.agents import Agent, AgentSession
    from duplex.agents.testing import MemoryTransport
    from duplex.backends.openai import OpenAIRealtime

    transport = MemoryTransport(playout="realtime")
    backend = OpenAIRealtime(
        base_url=url, api_key="sk-bench", model=call_id, env={}, max_session_duration=None
    )
    session = AgentSession(
        agent=Agent(instructions="You are the benchmark's agent."),
        backend=backend,
        local_vad_for_barge_in=False,
    )
    await session.start(transport)
    ready = time.monotonic()
    _record(
        out, {"event": "ready", "call": call_id, "pid": os.getpid(), "start_s": ready - requested}
    )
    speech, quiet = _frames()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    n = 0
    while loop.time() - t0 < seconds:
        transport.audio_input.push(speech if n % CYCLE_FRAMES < SPEECH_FRAMES else quiet)
        n += 1
        await asyncio.sleep(max(0.0, t0 + n * 0.02 - loop.time()))
    heard_ms = sum(
        1000.0 * p.frame.duration for p in transport.output.played if p.frame.rms() > 0.01
    )
    await session.aclose()
    await backend.aclose()
    _record(out, {"event": "done", "call": call_id, "pid": os.getpid(), "heard_ms": heard_ms})


def _record(path: str, record: dict[str, Any]) -> None:
    with open(path, "a") as f:  # one short line per write: appends do not interleave
        f.write(json.dumps(record) + "\n")


# --- livekit-agents' executors (module-level: job processes import them) -----------------
def prewarm(proc: Any) -> None:
    """What `agent run` prewarms: the runtime and the backend's modules."""
    import duplex.agents
    import duplex.backends.openai  # noqa: F401


async def job_entry(ctx: Any) -> None:
    spec = json.loads(ctx.job.metadata)
    await run_call(spec["url"], spec["seconds"], spec["out"], ctx.job.id, spec["requested"])
    ctx.shutdown("call over")


# --- duplex's own: many calls on one loop ---------------------------------------------------
def loop_process(
    url: str, seconds: float, out: str, n: int, warm: Any, go: Any, requested: Any
) -> None:
    """A server worker's process: ``n`` calls on one event loop, started when ``go`` is set."""
    prewarm(None)
    warm.set()

    async def main() -> None:
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        at = requested.value
        await asyncio.gather(*(run_call(url, seconds, out, f"loop-{i}", at) for i in range(n)))

    asyncio.run(main())


# --- measuring ------------------------------------------------------------------------------
@dataclass
class Sample:
    cpu_s: float
    rss_mb: float
    uss_mb: float


def sample_tree() -> Sample:
    me = psutil.Process()
    cpu = rss = uss = 0.0
    for p in [me, *me.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            cpu += t.user + t.system + t.children_user + t.children_system
            info = p.memory_full_info()
            rss += info.rss / 2**20
            uss += info.uss / 2**20
    return Sample(cpu, rss, uss)


def read_records(out: str) -> list[dict[str, Any]]:
    if not os.path.exists(out):
        return []
    with open(out) as f:
        return [json.loads(line) for line in f if line.strip()]


async def wait_records(out: str, event: str, n: int, timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in read_records(out) if r["event"] == event]
        if len(found) >= n:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(found)} of {n} calls reached {event!r}")
        await asyncio.sleep(0.05)


async def measure(
    mode: str, n: int, url: str, seconds: float, tmp: str, *, idle: int | None = None
) -> dict[str, Any]:
    """N concurrent calls in ``mode``; ``idle`` prewarmed executors (default N)."""
    out = os.path.join(tmp, f"{mode}-{n}-{uuid.uuid4().hex[:6]}.jsonl")
    before = sample_tree()
    stopper: Any
    if mode == "loop":
        ctx = mp.get_context("spawn")
        warm, go, requested = ctx.Event(), ctx.Event(), ctx.Value("d", 0.0)
        proc = ctx.Process(target=loop_process, args=(url, seconds, out, n, warm, go, requested))
        proc.start()
        # Its imports done first, as a prewarmed executor has done them.
        await asyncio.get_running_loop().run_in_executor(None, warm.wait, 60)
        requested.value = time.monotonic()
        go.set()

        async def stop() -> None:
            await asyncio.get_running_loop().run_in_executor(None, proc.join, 30)

        stopper = stop
    else:
        from livekit.agents import JobExecutorType
        from livekit.agents.ipc.proc_pool import ProcPool
        from livekit.agents.job import JobAcceptArguments, RunningJobInfo
        from livekit.protocol import agent

        pool = ProcPool(
            initialize_process_fnc=prewarm,
            job_entrypoint_fnc=job_entry,
            session_end_fnc=None,
            simulation_end_fnc=None,
            num_idle_processes=n if idle is None else idle,
            initialize_timeout=60.0,
            close_timeout=10.0,
            session_end_timeout=10.0,
            inference_executor=None,
            job_executor_type=JobExecutorType(mode),
            mp_ctx=mp.get_context("forkserver"),  # livekit-agents' default on Linux
            memory_warn_mb=4000,
            memory_limit_mb=0,
            http_proxy=None,
            loop=asyncio.get_running_loop(),
        )
        await pool.start()  # returns once the idle executors are initialized
        # No replacements while measuring: a worker re-warms one executor per job it
        # launches (spawn + imports), a cost per job that `warm_cpu_s` reports instead.
        pool.set_target_idle_processes(0)
        if idle is None:
            before_jobs = sample_tree()
        for i in range(n):
            job = agent.Job()
            job.id = f"{mode}-{i}-{uuid.uuid4().hex[:6]}"
            job.metadata = json.dumps(
                {"url": url, "seconds": seconds, "out": out, "requested": time.monotonic()}
            )
            info = RunningJobInfo(
                accept_arguments=JobAcceptArguments(name="agent", identity=job.id, metadata=""),
                job=job,
                url="ws://127.0.0.1:1",
                token="",
                worker_id="bench",
                fake_job=True,
            )
            await pool.launch_job(info)

        async def stop() -> None:
            await pool.aclose()

        stopper = stop
    ready = await wait_records(out, "ready", n, 60 + 5 * n)
    spread = max(r["start_s"] for r in ready) - min(r["start_s"] for r in ready)
    await asyncio.sleep(0.5)
    a = sample_tree()
    window = max(2.0, seconds - 2.0 - spread)
    await asyncio.sleep(window)
    b = sample_tree()
    done = await wait_records(out, "done", n, seconds + 30)
    await stopper()
    starts = sorted(r["start_s"] for r in ready)
    result = {
        "mode": mode,
        "calls": n,
        "start_ms_median": 1000 * statistics.median(starts),
        "start_ms_max": 1000 * starts[-1],
        "rss_mb_per_call": (b.rss_mb - before.rss_mb) / n,
        "uss_mb_per_call": (b.uss_mb - before.uss_mb) / n,
        "cpu_s_per_call_s": (b.cpu_s - a.cpu_s) / (n * window),
        "processes": len({r["pid"] for r in ready}),
        "heard_s_min": min(r["heard_ms"] for r in done) / 1000,
    }
    if mode != "loop" and idle is None:
        result["idle_rss_mb_per_executor"] = (before_jobs.rss_mb - before.rss_mb) / n
        result["warm_cpu_s_per_executor"] = (before_jobs.cpu_s - before.cpu_s) / n
    return result


def measure_apart(
    mode: str, n: int, url: str, seconds: float, tmp: str, idle: int | None = None
) -> dict[str, Any]:
    """`measure` in a fresh driver process, so one mode's imports never weigh on another's."""
    cmd = [sys.executable, "-m", "bench.executors", "--one", mode, str(n), "--url", url]
    cmd += ["--seconds", str(seconds), "--tmp", tmp]
    if idle is not None:
        cmd += ["--idle", str(idle)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 180)
    last = done.stdout.strip().splitlines()[-1:] or [""]
    if done.returncode != 0 or not last[0].startswith("{"):
        raise RuntimeError(f"{mode} x{n} failed: {done.stderr[-2000:]}")
    row: dict[str, Any] = json.loads(last[0])
    return row


def one(mode: str, n: int, url: str, seconds: float, tmp: str, idle: int | None) -> None:
    """The driver: a worker with livekit-agents and duplex loaded, running N calls in ``mode``."""
    import logging

    import livekit.agents  # noqa: F401  (a worker has it loaded before any call)

    prewarm(None)
    logging.basicConfig(level=logging.ERROR)
    print(json.dumps(asyncio.run(measure(mode, n, url, seconds, tmp, idle=idle))), flush=True)


# --- the run --------------------------------------------------------------------------------
def start_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.server"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"bench server did not start: {line!r}")
    return proc, f"http://127.0.0.1:{int(line.split()[1])}/v1"


def run(levels: list[int], seconds: float) -> dict[str, Any]:
    server, url = start_server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rows = []
            for mode in ("process", "thread", "loop"):
                for n in levels:
                    row = measure_apart(mode, n, url, seconds, tmp)
                    print(json.dumps(row), flush=True)
                    rows.append(row)
            # One job with no idle executor: spawn (or thread) + initialize + call.
            cold = {
                m: measure_apart(m, 1, url, 3.0, tmp, idle=0)["start_ms_max"]
                for m in ("process", "thread")
            }
            print(json.dumps({"cold_start_ms": cold}), flush=True)
    finally:
        server.terminate()
        server.wait(10)
    return {"rows": rows, "cold_start_ms": cold, "cores": os.cpu_count(), "seconds": seconds}


def table(result: dict[str, Any]) -> str:
    lines = [
        "| executor | calls | processes | start median / max (ms) | RSS per call (MB) "
        "| USS per call (MB) | CPU s per call-second | prewarm CPU s per executor "
        "| reply heard (min s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['mode']} | {r['calls']} | {r['processes']} | "
            f"{r['start_ms_median']:.0f} / {r['start_ms_max']:.0f} | {r['rss_mb_per_call']:.1f} | "
            f"{r['uss_mb_per_call']:.1f} | {r['cpu_s_per_call_s']:.4f} | "
            f"{r.get('warm_cpu_s_per_executor', 0.0):.2f} | {r['heard_s_min']:.1f} |"
        )
    cold = result["cold_start_ms"]
    lines.append("")
    lines.append(
        f"Cold start (no idle executor): process {cold['process']:.0f} ms, "
        f"thread {cold['thread']:.0f} ms. {result['cores']} cores; calls of "
        f"{result['seconds']:.0f} s."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 1, 4; 8 s calls")
    parser.add_argument("--levels", type=int, nargs="+", default=None)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--one", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    parser.add_argument("--idle", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        one(args.one[0], int(args.one[1]), args.url, args.seconds, args.tmp, args.idle)
        return
    levels = args.levels or ([1, 4] if args.quick else [1, 4, 8])
    seconds = args.seconds or (8.0 if args.quick else 12.0)
    result = run(levels, seconds)
    RESULTS.mkdir(exist_ok=True)
    day = dt.date.today().isoformat()
    (RESULTS / f"executors-{day}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"executors-{day}.md").write_text(
        f"# Job executors with duplex calls ({day})\n\n{table(result)}\n"
    )
    print(table(result))


if __name__ == "__main__":
    main()
