"""CPU per caller frame through duplex's input path, in CPU time (robust on a busy machine).

``python -m bench.input_cpu [--sessions 20] [--frames 1000] [--uvloop] [--cadence MS]``

N `AgentSession`s with `OpenAIRealtime` (against the benchmark server, in its own
process) and `WebRTCVAD`, each fed 48 kHz 20 ms frames of a noise floor through
`MemoryTransport`, round-robin, with the loop let run between rounds (so it is
never behind and every frame leaves as its own append). Prints the process CPU
time per frame: resample, VAD, append encoding and the socket write, with the
event loop's share. The full benchmark (`bench.run`) measures whole calls.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import numpy as np

from bench.against_server import run_against_server
from duplex.agents import Agent, AgentSession, AudioFrame
from duplex.agents.testing import MemoryTransport
from duplex.backends.openai import OpenAIRealtime
from duplex.plugins.webrtcvad import WebRTCVAD


async def measure(url: str, sessions: int, frames: int, cadence_ms: float | None = None) -> float:
    calls: list[tuple[AgentSession, MemoryTransport]] = []
    for i in range(sessions):
        extra: dict[str, Any] = {} if cadence_ms is None else {"append_cadence_ms": cadence_ms}
        backend = OpenAIRealtime(
            base_url=url,
            api_key="sk-bench",
            model=f"s{i}",
            env={},
            max_session_duration=None,
            **extra,
        )
        session = AgentSession(agent=Agent(instructions="x"), backend=backend, vad=WebRTCVAD())
        transport = MemoryTransport(input_rate=48000, output_rate=48000)
        await session.start(transport)
        calls.append((session, transport))
    rng = np.random.default_rng(1)
    noise = [
        AudioFrame(rng.normal(0, 8, 960).astype(np.int16).reshape(-1, 1), 48000) for _ in range(50)
    ]
    await asyncio.sleep(0.5)
    cpu0 = time.process_time()
    for k in range(frames):
        for _, transport in calls:
            transport.audio_input.push(noise[k % 50])
        for _ in range(3):
            await asyncio.sleep(0)
        if k % 25 == 0:
            await asyncio.sleep(0.002)  # let the sockets and the server's events through
    await asyncio.sleep(0.05)
    cpu = time.process_time() - cpu0
    for session, _ in calls:
        await session.aclose()
    return cpu / (frames * sessions)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--frames", type=int, default=1000, help="frames per session")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop (the extra)")
    parser.add_argument(
        "--cadence", type=float, default=None, help="append_cadence_ms (default: the backend's)"
    )
    args = parser.parse_args(argv)
    per_frame = run_against_server(
        lambda url: measure(url, args.sessions, args.frames, args.cadence), uvloop=args.uvloop
    )
    loop = "uvloop" if args.uvloop else "asyncio"
    print(
        f"input path: {per_frame * 1e6:.1f} us CPU per 20 ms frame "
        f"({per_frame * 50:.4f} s per session-second) on {loop}, {args.sessions} sessions, "
        f"append cadence {args.cadence if args.cadence is not None else 'default'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
