"""CPU per reply frame through duplex's output path, in CPU time (robust on a busy machine).

``python -m bench.output_cpu [--sessions 50] [--rounds 4] [--uvloop]``

N `AgentSession`s with `OpenAIRealtime` against the benchmark server (in its own
process, so its CPU is not counted) each ask for a reply at once, round after
round. The server streams 50 ms deltas of 24 kHz audio at 1x with a 100 ms lead;
each session plays them on the whole-call bench's 1x `PlayoutClock` (100 ms
buffer). No caller audio is sent, so what is measured is the receive side: socket
read, JSON parse, dispatch, base64 decode, resample to 48 kHz, playout pacing and
the event loop's share (timers and task wake-ups), plus the clock's own small cost.
Prints process CPU per 20 ms frame played and, with ``--callbacks``, the event-loop
callbacks (task steps, timers, future callbacks) run per frame: a count that, unlike
CPU time on a shared machine, does not move with the load. The full benchmark
(`bench.run`) measures whole calls.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import time

from . import config as C
from .clock import LatenessHistogram, PlayoutClock
from .fw_duplex import DuplexCall


def _played_ms(clock: PlayoutClock) -> float:
    return sum(s.played_ms for s in clock.segments)


async def _reply(call: DuplexCall, clock: PlayoutClock) -> None:
    """One whole reply: asked for, streamed by the server, and played out by the clock."""
    handle = await call.session.generate_reply()
    await handle.done
    await clock.wait_drained()


class _CallbackCounter:
    """Counts every callback the event loop runs (`asyncio.Handle._run`), while installed."""

    def __init__(self) -> None:
        self.count = 0
        self.per_frame = 0.0
        self._orig = asyncio.events.Handle._run

    def __enter__(self) -> _CallbackCounter:
        orig = self._orig

        def counted(handle: asyncio.Handle) -> None:
            self.count += 1
            orig(handle)

        asyncio.events.Handle._run = counted  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.events.Handle._run = self._orig  # type: ignore[method-assign]


async def measure(
    url: str, sessions: int, rounds: int, counter: _CallbackCounter | None = None
) -> float:
    """CPU seconds per 20 ms frame played (callbacks counted into ``counter`` if given)."""
    hist = LatenessHistogram()
    clocks = [PlayoutClock(hist) for _ in range(sessions)]
    calls = [DuplexCall(url, f"o{i}", clocks[i], "server_vad") for i in range(sessions)]
    for call in calls:
        await call.start()
    # One warm-up reply each (connections, first-use imports, caches), not counted.
    await asyncio.gather(*(_reply(c, k) for c, k in zip(calls, clocks, strict=True)))
    played0 = sum(_played_ms(c) for c in clocks)
    cpu0 = time.process_time()
    with counter if counter is not None else contextlib.nullcontext():
        for _ in range(rounds):
            await asyncio.gather(*(_reply(c, k) for c, k in zip(calls, clocks, strict=True)))
    cpu = time.process_time() - cpu0
    played = sum(_played_ms(c) for c in clocks) - played0
    for call in calls:
        await call.aclose()
    frames = played / C.FRAME_MS
    if counter is not None:
        counter.per_frame = counter.count / frames
    return cpu / frames


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=4, help="replies per session measured")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop (the extra)")
    parser.add_argument(
        "--callbacks", action="store_true", help="count event-loop callbacks (asyncio only)"
    )
    args = parser.parse_args(argv)
    counter = _CallbackCounter() if args.callbacks and not args.uvloop else None
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.server"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline().split()[1])
        coro = measure(f"http://127.0.0.1:{port}/v1", args.sessions, args.rounds, counter)
        if args.uvloop:
            import uvloop

            per_frame = uvloop.run(coro)
        else:
            per_frame = asyncio.run(coro)
    finally:
        server.terminate()
        server.wait(10)
    loop = "uvloop" if args.uvloop else "asyncio"
    print(
        f"output path: {per_frame * 1e6:.1f} us CPU per 20 ms frame played "
        f"({per_frame * 50:.4f} s per playing session-second) "
        f"on {loop}, {args.sessions} sessions"
        + (f"; {counter.per_frame:.2f} loop callbacks per frame" if counter else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
