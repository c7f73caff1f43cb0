"""`agent phone --workers 2`: calls spread over two processes on one port, drained on SIGTERM.

Each call is as Twilio places it: a signed webhook, then the media stream its TwiML
names, on a new connection that may reach the other worker (the stream token must
still check out). The backend of both workers is the OpenAI Realtime test server.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import aiohttp
import numpy as np
import pytest

from duplex.agents.audio import AudioFrame
from duplex.agents.testing.memory import tone
from tests.multiworker import HOLD_MS, REPLY_MS, agent, alive, held_replies, until
from tests.openai.server import RealtimeTestServer

from .fake_api import FakeProvider
from .provider import TWILIO_ACCOUNT, TWILIO_TOKEN, PhoneStream

pytestmark = pytest.mark.timeout(90)
#: Heard audio is counted in 20 ms frames above a level: the tone's edges fall in or out.
TOLERANCE_MS = 120


def heard_ms(stream: PhoneStream) -> float:
    """Agent audio the caller has heard (played on the provider's clock), 20 ms at a time."""
    pcm = stream.played_audio().data[:, 0].astype(np.float32) / 32768.0
    frames = pcm[: len(pcm) // 160 * 160].reshape(-1, 160)
    return 20.0 * float(np.sum(np.sqrt(np.mean(frames * frames, axis=1)) > 0.05))


async def caller_speaks(stream: PhoneStream) -> None:
    """A phone sends media all the time: a short tone, then silence until hung up."""
    with contextlib.suppress(ConnectionError, RuntimeError, asyncio.CancelledError):
        await stream.speak(tone(600, 8000, 440.0))
        while True:
            await stream.speak(AudioFrame(np.zeros((1600, 1), np.int16), 8000, 1))


async def test_calls_spread_over_two_workers_and_sigterm_lets_replies_finish() -> None:
    server = RealtimeTestServer()
    await server.start()
    release = held_replies(server)
    provider = await FakeProvider("twilio").start()
    env = {"TWILIO_ACCOUNT_SID": TWILIO_ACCOUNT, "TWILIO_AUTH_TOKEN": TWILIO_TOKEN}
    streams: list[PhoneStream] = []
    talking: list[asyncio.Task[None]] = []
    try:
        async with agent("phone", "--api-base-url", provider.url, server=server, env=env) as phone:
            while len(streams) < 3 or 0 in (await phone.calls_per_worker()).values():
                assert len(streams) < 12, await phone.calls_per_worker()
                streams.append(await provider.call(phone.url))
                talking.append(asyncio.ensure_future(caller_speaks(streams[-1])))
                # Counted once its stream reached a worker.
                await until(lambda: phone.has_calls(len(streams)), 10)
            load = await phone.calls_per_worker()
            assert sorted(load) == sorted(phone.pids)
            assert sum(load.values()) == len(streams) and all(load.values())

            await until(lambda: all(heard_ms(s) >= HOLD_MS / 2 for s in streams), 30)
            phone.proc.send_signal(signal.SIGTERM)
            await until(lambda: sum("draining" in line for line in phone.stderr) == 2, 10)
            # A new call is refused while draining: 503, or no listener at all.
            with (
                contextlib.suppress(aiohttp.ClientConnectionError),
                pytest.raises(PermissionError, match="503"),
            ):
                await provider.call(phone.url)
            release.set()
            await until(lambda: all(heard_ms(s) >= REPLY_MS - TOLERANCE_MS for s in streams), 30)
            assert phone.proc.returncode is None  # still serving the calls in progress
            for s in streams:
                assert heard_ms(s) <= REPLY_MS + TOLERANCE_MS
                await s.stop()
            assert await asyncio.wait_for(phone.proc.wait(), 30) == 0
            assert not any(alive(pid) for pid in phone.pids)
        assert not server.of_type("response.cancel")
        assert not server.of_type("conversation.item.truncate")
        stderr = "".join(phone.stderr)
        assert "Traceback" not in stderr and "without a valid token" not in stderr
        assert TWILIO_TOKEN not in stderr
    finally:
        for t in talking:
            t.cancel()
        await asyncio.gather(*talking, return_exceptions=True)
        await provider.stop()
        await server.close()
    assert not server.schema_errors, server.schema_errors
