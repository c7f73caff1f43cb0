"""`deliver_nowait`: reply audio offered straight from the reader, in order with the rest."""

from __future__ import annotations

import asyncio

import numpy as np

from duplex.agents.audio import AudioFrame
from duplex.agents.backend import AudioDelta, BackendEvent, ResponseDone, ResponseStarted

from .server import RealtimeTestServer, Reply
from .test_responses import connect


async def test_reply_audio_goes_to_the_handler_in_order_and_stops_when_withdrawn(
    server: RealtimeTestServer,
) -> None:
    rng = np.random.default_rng(3)
    pcm = rng.integers(-32768, 32768, size=24000 * 730 // 1000, dtype=np.int16)
    for _ in range(2):
        server.replies.append(Reply(audio=AudioFrame(pcm, 24000), audio_ms=730, chunk_ms=100))
    session, col = await connect(server)
    await col.aclose()  # this test consumes the events itself
    arrivals: list[tuple[str, BackendEvent]] = []  # every event, by the path it came
    done = asyncio.Event()

    async def consume() -> None:
        async for ev in session.events():
            arrivals.append(("events", ev))
            if isinstance(ev, ResponseDone):
                done.set()

    def offered(ev: BackendEvent) -> bool:
        if not isinstance(ev, AudioDelta):
            return False
        arrivals.append(("direct", ev))
        return True

    consumer = asyncio.get_running_loop().create_task(consume())
    session.deliver_nowait(offered)
    first = await session.create_response()
    await asyncio.wait_for(done.wait(), 5)
    done.clear()
    rid = (await first.done).response_id

    deltas = [(path, ev) for path, ev in arrivals if isinstance(ev, AudioDelta)]
    assert any(path == "direct" for path, _ in deltas)
    started_at = next(i for i, (_, ev) in enumerate(arrivals) if isinstance(ev, ResponseStarted))
    first_audio_at = next(i for i, (_, ev) in enumerate(arrivals) if isinstance(ev, AudioDelta))
    assert started_at < first_audio_at  # nothing overtakes what the consumer has not seen
    got = np.concatenate([ev.frame.data[:, 0] for _, ev in deltas if ev.response_id == rid])
    np.testing.assert_array_equal(got, pcm)  # each delta once, in order, across both paths

    session.deliver_nowait(None)
    arrivals.clear()
    second = await session.create_response()
    await asyncio.wait_for(done.wait(), 5)
    rid2 = (await second.done).response_id
    later = [(p, ev) for p, ev in arrivals if isinstance(ev, AudioDelta) and ev.response_id == rid2]
    assert later and all(path == "events" for path, _ in later)
    np.testing.assert_array_equal(np.concatenate([ev.frame.data[:, 0] for _, ev in later]), pcm)
    await session.aclose()
    await consumer
