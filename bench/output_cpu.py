"""CPU per reply frame through duplex's output path, in CPU time (robust on a busy machine).

``python -m bench.output_cpu [--sessions 50] [--rounds 4] [--uvloop]``

N `AgentSession`s with `OpenAIRealtime` against the benchmark server (in its own
process, so its CPU is not counted) each ask for a reply at once, round after
round. The server streams 50 ms deltas of 24 kHz audio at 1x with a 100 ms lead;
each session plays them on the whole-call bench's 1x `PlayoutClock` (100 ms
buffer). No caller audio is sent, so what is measured is the receive side: socket
read, JSON parse, dispatch, base64 decode, resample to 48 kHz, playout pacing and
the event loop's share (timers and task wake-ups), plus the clock's own small cost.
``--output buffer`` plays into the core `BufferedAudioOutput` (200 ms, as the WebRTC
track's) instead, pulled 20 ms at a time by one shared timer for all sessions (a
sender's clock), so what is left is duplex's side of the output buffer.
Prints process CPU per 20 ms frame played and, with ``--callbacks``, the event-loop
callbacks (task steps, timers, future callbacks) run per frame: a count that, unlike
CPU time on a shared machine, does not move with the load. The full benchmark
(`bench.run`) measures whole calls.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time

from duplex.agents import Agent, AgentSession, BufferedAudioOutput, Transport
from duplex.agents.testing.memory import MemoryAudioInput
from duplex.backends.openai import OpenAIRealtime

from . import config as C
from .against_server import run_against_server
from .clock import FRAME_S, LatenessHistogram, PlayoutClock
from .fw_duplex import DuplexCall

FRAME_SAMPLES = C.OUTPUT_RATE * C.FRAME_MS // 1000


def _played_ms(clock: PlayoutClock) -> float:
    return sum(s.played_ms for s in clock.segments)


class _BufferTransport(Transport):
    """A call whose agent audio goes to the core output buffer (200 ms, as WebRTC's)."""

    def __init__(self) -> None:
        super().__init__()
        self.audio_input = MemoryAudioInput(C.INPUT_RATE, 1)
        self.out = BufferedAudioOutput(C.OUTPUT_RATE, 1, capacity_ms=200.0)
        self.audio_output = self.out
        self.played_ms = 0.0


class _SharedPuller:
    """One 20 ms timer per loop taking a frame from every session's buffer, catching up
    after a stall as a sender's clock does."""

    def __init__(self, transports: list[_BufferTransport]) -> None:
        self._loop = asyncio.get_running_loop()
        self._transports = transports
        due = self._loop.time() + FRAME_S
        self._handle = self._loop.call_at(due, self._tick, due)

    def _tick(self, due: float) -> None:
        now = self._loop.time()
        while due <= now:
            for t in self._transports:
                frame = t.out.buffer.take(FRAME_SAMPLES)
                if frame is not None:
                    t.played_ms += frame.duration_ms
            due += FRAME_S
        self._handle = self._loop.call_at(due, self._tick, due)

    def stop(self) -> None:
        self._handle.cancel()


class _Call:
    """A session and its speaker, in either output shape."""

    def __init__(self, url: str, sid: str, output: str, hist: LatenessHistogram) -> None:
        self.clock: PlayoutClock | None = None
        self.buffered: _BufferTransport | None = None
        self.transport: Transport
        if output == "clock":
            self.clock = PlayoutClock(hist)
            call = DuplexCall(url, sid, self.clock, "server_vad")
            self.session, self.transport = call.session, call.transport
            return
        self.buffered = self.transport = _BufferTransport()
        backend = OpenAIRealtime(
            base_url=url, api_key="sk-bench", model=sid, env={}, max_session_duration=None
        )
        self.session = AgentSession(
            agent=Agent(instructions="x"), backend=backend, local_vad_for_barge_in=False
        )

    @property
    def played_ms(self) -> float:
        if self.clock is not None:
            return _played_ms(self.clock)
        assert self.buffered is not None
        return self.buffered.played_ms

    async def reply(self) -> None:
        """One whole reply: asked for, streamed by the server, and played out."""
        handle = await self.session.generate_reply()
        await handle.done
        if self.clock is not None:
            await self.clock.wait_drained()
        else:
            assert self.buffered is not None
            await self.buffered.out.wait_drained()


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
    url: str,
    sessions: int,
    rounds: int,
    counter: _CallbackCounter | None = None,
    output: str = "clock",
) -> float:
    """CPU seconds per 20 ms frame played (callbacks counted into ``counter`` if given)."""
    hist = LatenessHistogram()
    calls = [_Call(url, f"o{i}", output, hist) for i in range(sessions)]
    puller = _SharedPuller([c.buffered for c in calls if c.buffered is not None])
    for call in calls:
        await call.session.start(call.transport)
    # One warm-up reply each (connections, first-use imports, caches), not counted.
    await asyncio.gather(*(c.reply() for c in calls))
    played0 = sum(c.played_ms for c in calls)
    cpu0 = time.process_time()
    with counter if counter is not None else contextlib.nullcontext():
        for _ in range(rounds):
            await asyncio.gather(*(c.reply() for c in calls))
    cpu = time.process_time() - cpu0
    played = sum(c.played_ms for c in calls) - played0
    puller.stop()
    for call in calls:
        await call.session.aclose()
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
    parser.add_argument(
        "--output",
        choices=("clock", "buffer"),
        default="clock",
        help="the whole-call bench's 1x speaker, or the core output buffer on a shared clock",
    )
    args = parser.parse_args(argv)
    counter = _CallbackCounter() if args.callbacks and not args.uvloop else None
    per_frame = run_against_server(
        lambda url: measure(url, args.sessions, args.rounds, counter, args.output),
        uvloop=args.uvloop,
    )
    loop = "uvloop" if args.uvloop else "asyncio"
    print(
        f"output path: {per_frame * 1e6:.1f} us CPU per 20 ms frame played "
        f"({per_frame * 50:.4f} s per playing session-second) "
        f"on {loop}, {args.sessions} sessions, output {args.output}"
        + (f"; {counter.per_frame:.2f} loop callbacks per frame" if counter else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
