"""`agent dev --workers 2`: calls spread over two processes on one port, drained on SIGTERM.

Real parts throughout: the CLI in its own process, aiortc peers in the browser's
role (one ``POST /offer`` each, then media over the peer connection), and the OpenAI
Realtime test server as the backend of both workers' sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import aiohttp
import av
import pytest
from aiortc.mediastreams import MediaStreamError

from duplex.plugins.webrtc import av_to_frame
from tests.multiworker import HOLD_MS, REPLY_MS, agent, alive, held_replies, loopback_only, until
from tests.openai.server import RealtimeTestServer
from tests.webrtc.peer import ClientPeer, tone48k

pytestmark = pytest.mark.timeout(90)
#: Heard audio is counted in 20 ms frames above a level: the tone's edges fall in or out.
TOLERANCE_MS = 120


class Caller:
    """One browser peer: offers once, then counts the agent audio it hears (level > 0.05)."""

    def __init__(self) -> None:
        self.peer = ClientPeer()
        self.heard_ms = 0.0
        self._listen: asyncio.Task[None] | None = None

    async def call(self, url: str) -> None:
        connector = aiohttp.TCPConnector(force_close=True)  # a new connection: any worker
        async with (
            aiohttp.ClientSession(connector=connector) as http,
            http.post(url + "/offer", json={"type": "offer", "sdp": await self.peer.offer()}) as r,
        ):
            assert r.status == 200, await r.text()
            answer = await r.json()
        await self.peer.answer(answer["sdp"])
        self._listen = asyncio.ensure_future(self._count())

    async def _count(self) -> None:
        track = await self.peer.remote
        with contextlib.suppress(MediaStreamError):
            while True:
                received = await track.recv()
                assert isinstance(received, av.AudioFrame)
                frame = av_to_frame(received)
                if frame.rms() > 0.05:
                    self.heard_ms += 1000 * frame.duration

    async def say_something(self) -> None:
        await self.peer.mic.write(tone48k(440, 600))  # then the microphone is silent

    async def hang_up(self) -> None:
        await self.peer.close()
        if self._listen is not None:
            self._listen.cancel()
            await asyncio.gather(self._listen, return_exceptions=True)


async def test_calls_spread_over_two_workers_and_sigterm_lets_replies_finish(
    tmp_path: Path,
) -> None:
    server = RealtimeTestServer()
    await server.start()
    release = held_replies(server)
    callers: list[Caller] = []
    try:
        async with agent("dev", server=server, env=loopback_only(tmp_path)) as dev:
            # Calls until both workers hold one (the kernel picks per connection).
            while len(callers) < 3 or 0 in (await dev.calls_per_worker()).values():
                assert len(callers) < 12, await dev.calls_per_worker()
                callers.append(Caller())
                await callers[-1].call(dev.url)
            load = await dev.calls_per_worker()
            assert sorted(load) == sorted(dev.pids)
            assert sum(load.values()) == len(callers) and all(load.values())

            for c in callers:
                await c.say_something()
            # Every reply is playing (and holds at HOLD_MS) when SIGTERM arrives.
            await until(lambda: all(c.heard_ms >= HOLD_MS / 2 for c in callers), 30)
            dev.proc.send_signal(signal.SIGTERM)
            await until(lambda: sum("draining" in line for line in dev.stderr) == 2, 10)
            with contextlib.suppress(aiohttp.ClientConnectionError):
                late = Caller()
                connector = aiohttp.TCPConnector(force_close=True)
                async with (
                    aiohttp.ClientSession(connector=connector) as http,
                    http.post(
                        dev.url + "/offer", json={"type": "offer", "sdp": await late.peer.offer()}
                    ) as r,
                ):
                    assert r.status == 503  # or refused: nobody listens any more
                await late.peer.close()
            release.set()
            # Each caller hears its reply to the end, then hangs up; the workers then exit.
            await until(lambda: all(c.heard_ms >= REPLY_MS - TOLERANCE_MS for c in callers), 30)
            assert dev.proc.returncode is None  # still serving the calls in progress
            for c in callers:
                assert c.heard_ms <= REPLY_MS + TOLERANCE_MS
                await c.hang_up()
            assert await asyncio.wait_for(dev.proc.wait(), 30) == 0
            assert not any(alive(pid) for pid in dev.pids)
        assert not server.of_type("response.cancel")
        assert not server.of_type("conversation.item.truncate")
        assert "Traceback" not in "".join(dev.stderr)
        assert any("load: worker 0" in line for line in dev.stderr)
    finally:
        for c in callers:
            await c.hang_up()
        await server.close()
    assert not server.schema_errors, server.schema_errors
