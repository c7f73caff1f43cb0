"""Memory as each framework is deployed: one call in a process made the way its runner makes it.

``python -m bench.memory --url URL --out memory.json`` (run by `bench.run` with the server up)

- **livekit-agents** runs one process per job. Its worker on Linux forks job processes
  from a forkserver that preloaded the plugins, ``livekit.agents.ipc._preload`` (the
  native rtc library, the local VAD and end-of-turn weights, the openai SDK) and
  ``_preload_freeze``; the job process makes an ``rtc.Room`` and runs the entrypoint.
  The probe does the same with ``multiprocessing``'s forkserver and those preloads, then
  runs one ``AgentSession`` call in the forked process.
- **pipecat** runs one pipeline per process: a spawned process with one pipeline.
- **duplex** runs many sessions per worker process: a spawned process with one session
  is the cost of a worker; each further session costs what `bench.worker` measures as
  memory per extra session.
- **harness**: the same probe with no framework, what the callers and clocks cost.

Each probe talks (a question, the reply, a barge-in) for ``--seconds`` and then reads its
own RSS, USS (pages no other process shares) and PSS. A forked job's RSS counts the
pages it shares with the forkserver, so its USS is what one more call adds.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing as mp
import os
import random
from pathlib import Path
from typing import Any

import psutil

FRAMEWORKS = ("harness", "duplex", "pipecat", "livekit")
LIVEKIT_PRELOAD = [
    "livekit.plugins.openai",
    "bench.fw_livekit",
    "livekit.agents.ipc._preload",
    "livekit.agents.ipc._preload_freeze",  # last: freezes what the ones before imported
]
MB = 2**20


def _usage(proc: psutil.Process) -> dict[str, float]:
    info = proc.memory_full_info()
    return {"rss_mb": info.rss / MB, "uss_mb": info.uss / MB, "pss_mb": info.pss / MB}


async def _call(framework: str, url: str, seconds: float) -> dict[str, Any]:
    from . import speech
    from .caller import Caller
    from .clock import LatenessHistogram, Metronome, PlayoutClock
    from .worker import Factory

    if framework == "livekit":
        # What livekit's job process does before the entrypoint runs.
        import livekit.agents.ipc.job_proc_lazy_main  # noqa: F401
        from livekit import rtc

        room = rtc.Room()
    clock = PlayoutClock(LatenessHistogram())
    factory = Factory(framework, url)
    call = factory.make(f"memory-{framework}-{os.getpid()}", clock)
    await asyncio.wait_for(call.start(), 30.0)
    caller = Caller(0, speech.load(), speech.noise_floor(), clock, call.push, random.Random(3))
    metronome = Metronome(slots=1)
    metronome.add(caller.tick)
    metronome.start()
    await asyncio.sleep(seconds)
    gc.collect()
    usage: dict[str, Any] = dict(_usage(psutil.Process()))
    usage["replies_heard"] = len(clock.segments)
    usage["utterances"] = len(caller.utterances)
    if framework == "livekit":
        parent = psutil.Process().parent()
        if parent is not None:  # the forkserver every job process is forked from
            usage["forkserver"] = _usage(parent)
        usage["room"] = type(room).__name__
    return usage


def _probe(framework: str, url: str, seconds: float, out: str) -> None:
    """The child: one call, then its memory, written to ``out``."""

    async def run() -> None:
        result = await _call(framework, url, seconds)
        with open(out, "w") as f:  # noqa: ASYNC230 (the call is over; nothing else waits)
            json.dump(result, f)
        # Measured: the call's own shutdown (and what a framework leaves running) is not.
        os._exit(0)

    asyncio.run(run())


def probe(framework: str, url: str, seconds: float, out: Path) -> dict[str, Any]:
    ctx: Any
    if framework == "livekit":
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(LIVEKIT_PRELOAD)
    else:
        ctx = mp.get_context("spawn")
    proc = ctx.Process(target=_probe, args=(framework, url, seconds, str(out)), name="job_proc")
    proc.start()
    proc.join(seconds + 120)
    if proc.is_alive():
        proc.kill()
    if not out.exists():
        return {"error": f"probe exited with {proc.exitcode}"}
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def measure(url: str, raw: Path, seconds: float = 10.0) -> dict[str, Any]:
    """Run the probes in a child process (the forkserver ends with it); returns the records."""
    import subprocess
    import sys

    out = raw / "memory.json"
    root = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "-m", "bench.memory", "--url", url, "--out", str(out)]
    cmd += ["--seconds", str(seconds)]
    done = subprocess.run(cmd, cwd=root, timeout=len(FRAMEWORKS) * (seconds + 150))
    if done.returncode != 0 or not out.exists():
        return {"error": f"bench.memory exited with {done.returncode}"}
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--frameworks", nargs="+", default=list(FRAMEWORKS))
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    for fw in args.frameworks:
        part = args.out.with_suffix(f".{fw}.json")
        results[fw] = probe(fw, args.url, args.seconds, part)
        print(f"  memory {fw}: {results[fw]}", flush=True)
    args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
