"""`make bench`, realtime-server section: what `agent realtime-server` adds on top of the cascade.

1. Added latency per turn: commit -> first ``response.output_audio.delta`` through the
   server (a WebSocket client, manual turns), minus commit -> first `AudioDelta` of the
   same cascade driven in-process with the same audio, both streamed at 1x: what the
   protocol layer costs.
2. CPU per session: the server process's CPU while N connections stream caller audio
   in real time (20 ms appends, server VAD on, no speech so no model runs): the cost
   of holding a session (base64, resampling, VAD, events), at 10 and 50 connections.

The server is the real command (``agent realtime-server``, offline default) in its own
process, so its CPU is its own. Loopback only.

    python -m bench.realtime_server            # 7 turns, 10 and 50 connections, 15 s
    python -m bench.realtime_server --quick    # 3 turns, 10 and 50 connections, 5 s
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import psutil
import soxr

from . import config as C
from . import speech

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
KEY = "sk-bench-realtime"


def _audio(rate: int) -> list[np.ndarray]:
    """The benchmark's questions, with 300 ms of silence after each, at ``rate``."""
    out = []
    for u in speech.load().questions:
        pcm = np.asarray(soxr.resample(u.pcm, C.INPUT_RATE, rate, quality="HQ"), dtype=np.int16)
        out.append(np.concatenate([pcm, np.zeros(rate * 3 // 10, dtype=np.int16)]))
    return out


class ServerProcess:
    def __init__(self) -> None:
        env = {**os.environ}
        env.pop("DUPLEX_VLLM_URL", None)
        cmd = [sys.executable, "-m", "duplex.agents.cli", "--log-level", "warning"]
        cmd += ["realtime-server", "--port", "0", "--api-key", KEY]
        cmd += ["--max-connections", "200"]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None
        self.url = ""
        deadline = time.monotonic() + 180
        while not self.url and time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("agent realtime-server exited during start-up")
            m = re.search(r"ws://[\d.]+:\d+/v1/realtime", line)
            self.url = (m.group(0) + "?model=bench") if m else ""
        self.ps = psutil.Process(self.proc.pid)

    def cpu_s(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def _connect(http: aiohttp.ClientSession, url: str) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(url, headers={"Authorization": f"Bearer {KEY}"}, max_msg_size=0)
    await ws.receive_json()  # session.created
    return ws


async def _until(ws: aiohttp.ClientWebSocketResponse, kind: str) -> float:
    while True:
        msg = await ws.receive(timeout=120)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise RuntimeError(f"connection ended: {msg.type}")
        ev = json.loads(msg.data)
        if ev["type"] == kind:
            return time.perf_counter()
        if ev["type"] == "error":
            raise RuntimeError(f"server error: {ev['error']}")


async def server_latencies(url: str, turns: int) -> tuple[list[float], list[float], list[float]]:
    """Per counted turn: (ms commit -> first delta, commit time, first delta time)."""
    clips = _audio(24000)
    out: list[float] = []
    commits: list[float] = []
    firsts: list[float] = []
    async with aiohttp.ClientSession() as http:
        ws = await _connect(http, url)
        update = {"type": "realtime", "audio": {"input": {"turn_detection": None}}}
        await ws.send_json({"type": "session.update", "session": update})
        await _until(ws, "session.updated")
        for k in range(turns + 1):  # the first turn warms the models up and is not counted
            pcm = clips[k % len(clips)].tobytes()
            async for i in _paced(len(pcm), 960):  # 20 ms of 24 kHz PCM16, at 1x
                chunk = base64.b64encode(pcm[i : i + 960]).decode()
                await ws.send_json({"type": "input_audio_buffer.append", "audio": chunk})
            t0 = time.perf_counter()
            await ws.send_json({"type": "input_audio_buffer.commit"})
            await ws.send_json({"type": "response.create"})
            t1 = await _until(ws, "response.output_audio.delta")
            await _until(ws, "response.done")
            if k:
                out.append(1000.0 * (t1 - t0))
                commits.append(t0)
                firsts.append(t1)
        await ws.close()
    return out, commits, firsts


class _Marks:
    """When the cascade was told the turn ended, and when it produced its first audio."""

    def __init__(self) -> None:
        self.commits: list[float] = []
        self.first_audio: list[float] = []


def _timed_backend(marks: _Marks) -> Any:
    """The offline default, its sessions instrumented at the cascade boundary."""
    from duplex.agents.backend import AudioDelta, ResponseStarted
    from duplex.backends.cascade import offline_backend

    backend = offline_backend()
    connect = backend.connect

    async def timed_connect(**kwargs: Any) -> Any:
        session = await connect(**kwargs)
        commit, events = session.commit_audio, session.events

        async def timed_commit() -> None:
            marks.commits.append(time.perf_counter())
            await commit()

        async def timed_events() -> AsyncIterator[Any]:
            waiting = False
            async for ev in events():
                if isinstance(ev, ResponseStarted):
                    waiting = True
                elif isinstance(ev, AudioDelta) and waiting:
                    marks.first_audio.append(time.perf_counter())
                    waiting = False
                yield ev

        session.commit_audio = timed_commit  # type: ignore[method-assign]
        session.events = timed_events  # type: ignore[method-assign]
        return session

    backend.connect = timed_connect  # type: ignore[method-assign]
    return backend


async def added_latencies(turns: int) -> tuple[list[float], list[float]]:
    """Per turn: client commit -> first audio delta, and the cascade's own part of it."""
    from duplex.server.realtime import RealtimeServer, ServerOptions

    marks = _Marks()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    options = ServerOptions(port=0, api_keys=(KEY,))
    server = RealtimeServer(_timed_backend(marks), options)
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(180)
    url = f"ws://127.0.0.1:{server.port}/v1/realtime?model=bench"
    try:
        _, t_commit, t_audio = await server_latencies(url, turns)
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
    # The first turn warmed the models up; the marks line up turn by turn with the client's.
    own = [1000.0 * (a - c) for c, a in zip(marks.commits[1:], marks.first_audio[1:], strict=True)]
    return [1000.0 * (a - c) for c, a in zip(t_commit, t_audio, strict=True)], own


async def _paced(total: int, step: int) -> AsyncIterator[int]:
    """Offsets of 20 ms chunks, released at 1x like a microphone (so STT works while it hears)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for n, i in enumerate(range(0, total, step)):
        delay = start + n * 0.02 - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        yield i


async def _stream(url: str, http: aiohttp.ClientSession, stop: asyncio.Event) -> int:
    """One caller streaming microphone noise at 1x in 20 ms appends; returns appends sent."""
    ws = await _connect(http, url)
    rng = np.random.default_rng()
    frame = 24000 // 50
    sent = 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not stop.is_set():
        pcm = np.clip(rng.normal(0, C.NOISE_STD, frame), -32768, 32767).astype(np.int16)
        await ws.send_json(
            {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm.tobytes()).decode()}
        )
        sent += 1
        delay = start + sent * 0.02 - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
    await ws.close()
    return sent


async def cpu_per_session(server: ServerProcess, n: int, window: float) -> dict[str, float]:
    stop = asyncio.Event()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        tasks = [asyncio.ensure_future(_stream(server.url, http, stop)) for _ in range(n)]
        await asyncio.sleep(1.5)  # connected and streaming
        c0, t0 = server.cpu_s(), time.perf_counter()
        await asyncio.sleep(window)
        c1, t1 = server.cpu_s(), time.perf_counter()
        stop.set()
        sent = sum(await asyncio.gather(*tasks))
    elapsed = t1 - t0
    total_pct = 100.0 * (c1 - c0) / elapsed
    return {
        "sessions": n,
        "server_cpu_pct": total_pct,
        "cpu_pct_per_session": total_pct / n,
        "appends_per_s": sent / (elapsed + 1.5),
    }


async def _idle_cpu(server: ServerProcess, window: float) -> float:
    c0, t0 = server.cpu_s(), time.perf_counter()
    await asyncio.sleep(window)
    return 100.0 * (server.cpu_s() - c0) / (time.perf_counter() - t0)


def markdown(wire: list[float], own: list[float], cpu: list[dict[str, float]], idle: float) -> str:
    added = [w - o for w, o in zip(wire, own, strict=True)]
    lines = [
        "## Realtime server (`agent realtime-server`, offline default)",
        "",
        f"Latency per turn, commit -> first audio delta ({len(wire)} turns, 1x caller audio, "
        "manual turns, Whisper + echo LLM + Piper on CPU):",
        "",
        "| | median ms | min ms | max ms |",
        "|---|---|---|---|",
    ]
    for name, xs in (
        ("client sees (through the server)", wire),
        ("the cascade's own time (same turns)", own),
        ("**added by the server**", added),
    ):
        lines.append(f"| {name} | {statistics.median(xs):.1f} | {min(xs):.1f} | {max(xs):.1f} |")
    lines += [
        "",
        "CPU of the server process while each connection streams 20 ms appends at 1x "
        f"(server VAD on, no speech; idle server: {idle:.1f}% CPU):",
        "",
        "| connections | server CPU % (of one core) | CPU % per session | appends/s |",
        "|---|---|---|---|",
    ]
    for row in cpu:
        lines.append(
            f"| {row['sessions']:.0f} | {row['server_cpu_pct']:.1f} | "
            f"{row['cpu_pct_per_session']:.2f} | {row['appends_per_s']:.0f} |"
        )
    lines.append("")
    return "\n".join(lines)


async def run(*, turns: int, levels: list[int], window: float) -> str:
    wire, own = await added_latencies(turns)
    server = ServerProcess()
    try:
        idle = await _idle_cpu(server, 2.0)
        cpu = [await cpu_per_session(server, n, window) for n in levels]
    finally:
        server.close()
    return markdown(wire, own, cpu, idle)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--levels", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--out", type=Path, default=None, help="append the section to this file")
    args = parser.parse_args(argv)
    turns, window = (3, 5.0) if args.quick else (7, 15.0)
    md = asyncio.run(run(turns=turns, levels=args.levels, window=window))
    out = args.out or RESULTS / f"{dt.date.today().isoformat()}-realtime-server.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        f.write("\n" + md)
    print(md)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
