"""`make bench`: duplex, livekit-agents and pipecat, side by side, in one run.

The OpenAI-protocol server runs as one process per core and serves every session; each
framework runs each level in its own worker process (so CPU and memory are its own),
one after the other so they never compete for the cores; duplex's scaling runs use N
worker processes over one shared window (`bench.multi`). Then one call per process
shows each framework's memory as deployed (`bench.memory`). Writes
bench/results/<date>.md and .png (raw records under bench/results/raw/), and, for a
full run, copies the plot to docs/img/ and the tables into docs/performance.md.

    python -m bench.run            # full: 1, 10, 50, 100 sessions; duplex on to 300
    python -m bench.run --quick    # 1 and 10 sessions, short windows
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from . import memory, profile, speech
from .analysis import Row, analyse
from .multi import framework_name, merge, split_name
from .profile import markdown as profile_markdown
from .profile import rank

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PY = sys.executable
#: Levels beyond the common ones, for duplex alone: on its workers (every level) and in
#: one process (until one breaks), for the scaling table.
EXTRA_DUPLEX = [150, 200, 300]
#: The common levels from which duplex also runs on its workers.
SCALING_FROM = 50


@dataclass
class Plan:
    levels: list[int]
    frameworks: list[str]
    extra_duplex: list[int]
    window: float
    warmup: float
    server_vad_level: int | None
    profile_level: int | None
    harness_level: int | None
    publish: bool
    out: Path
    date: str
    #: duplex's worker processes in the scaling runs (the extra levels); 1 turns them off.
    duplex_workers: int = 2
    scaling_from: int | None = None
    memory: bool = False
    #: Measure a level again when other load was high (off for quick runs: they are checks).
    rerun_busy: bool = True
    raw: Path = field(init=False)
    #: Levels measured twice because the machine was busy, for the results file.
    reruns: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.raw = self.out / "raw" / self.date

    def window_for(self, sessions: int) -> float:
        # Few sessions give few turns per second: listen longer to get enough samples. Many
        # give plenty in less time, and their start and close are the slow part of a level.
        if sessions <= 2:
            return self.window * 2.0
        if sessions <= 10:
            return self.window * 1.5
        return self.window * (0.75 if sessions >= 200 else 1.0)


@dataclass
class Env:
    """What else was going on: the machine is shared, so every row says how busy it was."""

    server_cpu_pct: float = 0.0
    foreign_cpu_pct: float = 0.0
    cpu_pressure_pct: float = 0.0


def _pressure() -> float:
    try:
        text = Path("/proc/pressure/cpu").read_text()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith("some"):
            return float(line.split("total=")[1]) / 1e6
    return 0.0


class Server:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [PY, "-m", "bench.server"], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.proc.kill()
            raise RuntimeError(f"benchmark server did not start: {line!r}")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.ps = psutil.Process(self.proc.pid)

    def call(self, method: str, path: str) -> dict[str, Any]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        with urllib.request.urlopen(req, timeout=30) as resp:
            data: dict[str, Any] = json.loads(resp.read())
        return data

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class ServerPool:
    """The benchmark server as one process per core: one event loop saturates near 200 sessions.

    Session ``i`` of a level talks to server ``i % n`` (the worker picks it from the list of
    URLs), whichever framework and worker it runs in; the records of the servers are merged.
    """

    def __init__(self, n: int) -> None:
        self.servers: list[Server] = []
        try:
            for _ in range(max(1, n)):
                self.servers.append(Server())
        except BaseException:
            self.close()
            raise
        self.urls = [s.url for s in self.servers]
        self.url = self.urls[0]

    def call(self, method: str, path: str) -> dict[str, Any]:
        answers = [s.call(method, path) for s in self.servers]
        if path != "/bench/stats":
            return answers[0]
        errors: Counter[str] = Counter()
        sessions: dict[str, Any] = {}
        for a in answers:
            errors.update(a.get("errors", {}))
            sessions.update(a.get("sessions", {}))
        return {
            "open_connections": sum(int(a.get("open_connections", 0)) for a in answers),
            "errors": dict(errors),
            "sessions": sessions,
            "servers": len(answers),
        }

    def cpu(self) -> float:
        return sum(s.cpu() for s in self.servers)

    def close(self) -> None:
        for s in self.servers:
            s.close()


class Meter:
    """CPU of the server, of everything else, and CPU pressure, over a worker's window."""

    def __init__(self, server: ServerPool) -> None:
        self._server = server
        self._busy, self._srv, self._pres = _busy(), server.cpu(), _pressure()
        self._t0 = time.monotonic()
        self._seconds = 0.0
        self._stopped = False

    def stop(self) -> None:
        """At the end of the window (the worker's own CPU is known only later)."""
        self._stopped = True
        self._seconds = max(1e-6, time.monotonic() - self._t0)
        self._srv = self._server.cpu() - self._srv
        self._busy = _busy() - self._busy
        self._pres = _pressure() - self._pres

    def env(self, worker_cpu: float) -> Env:
        if not self._stopped:
            self.stop()
        foreign = self._busy - self._srv - worker_cpu
        return Env(
            server_cpu_pct=100.0 * self._srv / self._seconds,
            foreign_cpu_pct=max(0.0, 100.0 * foreign / self._seconds),
            cpu_pressure_pct=100.0 * self._pres / self._seconds,
        )


def _busy() -> float:
    t = psutil.cpu_times()
    return float(t.user + t.system + t.nice + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0))


def run_level(
    server: ServerPool, plan: Plan, framework: str, sessions: int, *, profile_to: Path | None = None
) -> tuple[Row, dict[str, Any]]:
    """One level in its own worker process(es); ``duplex_2w`` is duplex on two workers."""
    tag = f"{framework}-{sessions}" + ("-profiled" if profile_to is not None else "")
    base, workers = split_name(framework)
    window = plan.window_for(sessions)
    server.call("POST", "/bench/reset")
    outs = [
        plan.raw / (f"{tag}.worker.json" if workers == 1 else f"{tag}.w{k}.json")
        for k in range(workers)
    ]
    procs = [
        subprocess.Popen(
            _worker_cmd(plan, server, base, sessions, tag, window, outs[k], k, workers),
            cwd=ROOT,
            stdin=subprocess.PIPE if workers > 1 else None,
            stdout=subprocess.PIPE,
            text=True,
        )
        for k in range(workers)
    ]
    spy: subprocess.Popen[str] | None = None
    meter: Meter | None = None
    if workers > 1:
        # Every worker warms up its share, then all measure the same seconds.
        for proc in procs:
            _read_until(proc, "READY")
        go = time.monotonic() + 0.2
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(f"GO {go}\n")
            proc.stdin.flush()
    for k, proc in enumerate(procs):
        _read_until(proc, "WINDOW_START")
        if k == 0:
            meter = Meter(server)
            if profile_to is not None:
                spy = profile.start(proc.pid, window - 1.0, profile_to)
    for proc in procs:
        _read_until(proc, "WINDOW_END")
    assert meter is not None
    meter.stop()
    parts = [_wait_result(proc, out, tag) for proc, out in zip(procs, outs, strict=True)]
    result = merge(parts, framework)
    if workers > 1:
        (plan.raw / f"{tag}.worker.json").write_text(json.dumps(result))
    if spy is not None:
        spy.wait(60)
    env = meter.env(float(result["cpu_seconds"]))
    stats = server.call("GET", "/bench/stats")
    (plan.raw / f"{tag}.server.json").write_text(json.dumps(stats))
    row = analyse(result, stats)
    row.server_cpu_pct = env.server_cpu_pct
    row.foreign_cpu_pct = env.foreign_cpu_pct
    row.cpu_pressure_pct = env.cpu_pressure_pct
    _log(row)
    return row, result


def _worker_cmd(
    plan: Plan,
    server: ServerPool,
    framework: str,
    sessions: int,
    tag: str,
    window: float,
    out: Path,
    part: int,
    parts: int,
) -> list[str]:
    cmd = [PY, "-m", "bench.worker", "--framework", framework, "--sessions", str(sessions)]
    cmd += ["--url", *server.urls, "--out", str(out), "--tag", tag]
    cmd += ["--window", str(window), "--warmup", str(plan.warmup)]
    return cmd + (["--part", f"{part}/{parts}"] if parts > 1 else [])


def _read_until(proc: subprocess.Popen[str], marker: str) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(marker):
            return
    raise RuntimeError(f"worker {proc.pid} ended before {marker} (rc={proc.wait(30)})")


#: A worker writes its records and exits within its close timeout after the window.
WORKER_EXIT_S = 120.0


def _wait_result(proc: subprocess.Popen[str], out: Path, tag: str) -> dict[str, Any]:
    try:
        proc.communicate(timeout=WORKER_EXIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()  # a worker that never exits loses its level, not the whole run
        proc.communicate()
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"worker {tag} failed (rc={proc.returncode})")
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def _log(row: Row) -> None:
    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    print(
        f"  {row.framework:>18} x{row.sessions:<4} added p50/p99 {f(row.added_ms.get('p50'))}/"
        f"{f(row.added_ms.get('p99'))} ms  interrupt p95 {f(row.interrupt_ms.get('p95'))} ms  "
        f"lateness p99 {f(row.lateness_p99)} ms  cpu {row.cpu_per_session_s or 0:.4f} s/s  "
        f"mem {f(row.mb_per_session)} MB  server {row.server_cpu_pct or 0:.0f}%  "
        f"other {row.foreign_cpu_pct or 0:.0f}%",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 and 10 sessions, short windows")
    parser.add_argument(
        "--offline", action="store_true", help="the offline default's turn-taking section only"
    )
    parser.add_argument("--levels", type=int, nargs="+", help="session counts for every framework")
    parser.add_argument(
        "--frameworks", nargs="+", default=["duplex", "livekit", "pipecat", "floor"]
    )
    parser.add_argument(
        "--extra",
        type=int,
        nargs="*",
        help="further levels for duplex alone (on --duplex-workers, and in one process until "
        "it breaks)",
    )
    parser.add_argument(
        "--duplex-workers",
        type=int,
        default=2,
        metavar="N",
        help="worker processes for duplex's scaling runs: the extra levels and the common "
        f"levels from {SCALING_FROM} (default 2; a framework named duplex_Nw runs so anywhere)",
    )
    parser.add_argument(
        "--server-procs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        metavar="N",
        help="benchmark server processes; session i talks to server i %% N (default: 2)",
    )
    parser.add_argument(
        "--memory",
        choices=["on", "off"],
        help="memory as deployed (bench/memory.py): one call per process for each framework "
        "(default: on for a full run)",
    )
    parser.add_argument("--window", type=float, help="measurement seconds per level")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-publish", action="store_true", help="leave docs/ alone")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument(
        "--rewrite",
        metavar="DATE",
        help="only write the results file, plot and docs again from that run's raw records",
    )
    parser.add_argument(
        "--no-renice",
        action="store_true",
        help="do not raise the benchmark's priority over other load",
    )
    parser.add_argument(
        "--realtime-server",
        choices=["on", "off", "only"],
        default="on",
        help="the `agent realtime-server` section (bench/realtime_server.py): on, off or only",
    )
    args, rest = parser.parse_known_args(argv)
    if args.offline:
        from . import offline

        return offline.main(rest + (["--quick"] if args.quick else []))
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    quick = args.quick
    if args.realtime_server == "only":
        from . import realtime_server

        return realtime_server.main(["--quick"] if quick else [])
    levels = args.levels or ([1, 10] if quick else [1, 10, 50, 100])
    plan = Plan(
        levels=levels,
        frameworks=args.frameworks,
        extra_duplex=args.extra if args.extra is not None else ([] if quick else EXTRA_DUPLEX),
        window=args.window or (8.0 if quick else 20.0),
        warmup=args.warmup,
        server_vad_level=None if quick else _top(levels, 50),
        profile_level=None if quick or args.no_profile else _top(levels, 100),
        harness_level=None if quick else _top(levels, 100),
        publish=not quick and not args.no_publish,
        duplex_workers=max(1, args.duplex_workers),
        scaling_from=None if quick else SCALING_FROM,
        memory=(args.memory or ("off" if quick else "on")) == "on",
        rerun_busy=not quick,
        out=args.out,
        date=args.rewrite or dt.date.today().isoformat(),
    )
    if args.rewrite:
        from .report import rewrite

        print(f"wrote {rewrite(plan)}")
        return 0
    if not args.no_renice and hasattr(os, "nice"):
        with contextlib.suppress(OSError):
            os.nice(-10)  # children inherit it: the shared machine's other load matters less
    plan.raw.mkdir(parents=True, exist_ok=True)
    speech.load()  # make the fixtures before anything is timed
    started = time.monotonic()
    server = ServerPool(args.server_procs)
    try:
        rows, profile_md, harness = _run_all(server, plan)
        deployed = memory.measure(server.url, plan.raw) if plan.memory else None
    finally:
        server.close()
    from .report import write

    md_path = write(plan, rows, profile_md, harness, time.monotonic() - started, memory=deployed)
    print(f"wrote {md_path}")
    if args.realtime_server == "on":
        from . import realtime_server

        realtime_server.main([*(["--quick"] if quick else []), "--out", str(md_path)])
    return 0


def _top(levels: list[int], preferred: int) -> int:
    """The level for the profile and the harness run: 100, or the largest one run."""
    return preferred if preferred in levels else max(levels)


#: A level measured while other programs used this much CPU is measured again (once).
BUSY_PCT = 40.0
MAX_RERUNS = 3


def _try_level(server: ServerPool, plan: Plan, framework: str, sessions: int) -> Row:
    """A level whose worker failed is a row with nothing started, not the end of the run."""
    try:
        return run_level(server, plan, framework, sessions)[0]
    except (RuntimeError, OSError, ValueError) as e:
        print(f"  {framework} x{sessions} failed: {e}", flush=True)
        return Row(framework, sessions, 0, failed=[str(e)])


def _measure(server: ServerPool, plan: Plan, framework: str, sessions: int) -> Row:
    """One level; again if the shared machine was busy meanwhile (the quieter run is kept)."""
    row = _try_level(server, plan, framework, sessions)
    busy = (row.foreign_cpu_pct or 0.0) > BUSY_PCT
    if plan.rerun_busy and busy and len(plan.reruns) < MAX_RERUNS:
        print(f"  (other load {row.foreign_cpu_pct:.0f}%: measuring again)", flush=True)
        again = _try_level(server, plan, framework, sessions)
        plan.reruns.append(
            f"{framework} x{sessions}: other load {row.foreign_cpu_pct:.0f}% on the first try, "
            f"{again.foreign_cpu_pct or 0:.0f}% on the second"
        )
        if (again.foreign_cpu_pct or 0.0) < (row.foreign_cpu_pct or 0.0):
            row = again
    return row


def _run_all(server: ServerPool, plan: Plan) -> tuple[list[Row], str | None, list[Row]]:
    rows: list[Row] = []
    scaled = framework_name("duplex", plan.duplex_workers) if plan.duplex_workers > 1 else None
    for n in plan.levels:
        for fw in plan.frameworks:
            rows.append(_measure(server, plan, fw, n))
        if (
            scaled is not None
            and "duplex" in plan.frameworks
            and scaled not in plan.frameworks
            and plan.scaling_from is not None
            and n >= plan.scaling_from
        ):
            rows.append(_measure(server, plan, scaled, n))
    if "duplex" in plan.frameworks:
        single_broke = False
        for n in plan.extra_duplex:
            if scaled is not None:
                rows.append(_measure(server, plan, scaled, n))
            if not single_broke:
                row = _measure(server, plan, "duplex", n)
                rows.append(row)
                single_broke = not row.healthy()  # larger levels only take longer to say so
            elif scaled is None:
                break
    if scaled is not None and plan.extra_duplex and "floor" in plan.frameworks:
        # What moving the bytes alone costs at the top level on as many workers.
        top = max(plan.extra_duplex)
        rows.append(_measure(server, plan, framework_name("floor", plan.duplex_workers), top))
    if plan.server_vad_level is not None and "duplex" in plan.frameworks:
        rows.append(_measure(server, plan, "duplex_server_vad", plan.server_vad_level))
    harness: list[Row] = []
    if plan.harness_level is not None:
        harness.append(_try_level(server, plan, "harness", plan.harness_level))
        if scaled is not None and plan.extra_duplex and "duplex" in plan.frameworks:
            top = max(plan.extra_duplex)
            harness.append(
                _try_level(server, plan, framework_name("harness", plan.duplex_workers), top)
            )
    profile_md: str | None = None
    if plan.profile_level is not None and "duplex" in plan.frameworks:
        raw = plan.raw / f"duplex-{plan.profile_level}.pyspy.txt"
        try:
            run_level(server, plan, "duplex", plan.profile_level, profile_to=raw)
        except (RuntimeError, OSError, ValueError) as e:
            print(f"  profiled duplex x{plan.profile_level} failed: {e}", flush=True)
        if raw.exists():
            samples, by_own, by_total = rank(raw.read_text(), top=20)
            profile_md = profile_markdown(samples, by_own, by_total, plan.window - 1.0)
    return rows, profile_md, harness


if __name__ == "__main__":
    raise SystemExit(main())
