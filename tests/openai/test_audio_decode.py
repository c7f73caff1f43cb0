"""Reply audio as decoded on the receive path equals the server's samples, sample for sample."""

from __future__ import annotations

import asyncio

import numpy as np

from duplex.agents.audio import AudioFrame
from duplex.agents.backend import AudioDelta, ResponseDone

from .server import RealtimeTestServer, Reply
from .test_responses import connect


async def test_decoded_deltas_equal_the_servers_samples(server: RealtimeTestServer) -> None:
    # Full-scale noise (both signs, the int16 extremes included) over a length that is
    # not a whole number of chunks, so the last delta is a short one.
    rng = np.random.default_rng(7)
    pcm = rng.integers(-32768, 32768, size=24000 * 730 // 1000, dtype=np.int16)
    pcm[:2] = (-32768, 32767)
    server.replies.append(Reply(audio=AudioFrame(pcm, 24000), audio_ms=730, chunk_ms=100))
    session, col = await connect(server)
    handle = await session.create_response()
    done = await asyncio.wait_for(handle.done, 5)
    await col.wait_for(ResponseDone)
    assert done.status == "completed"
    deltas = [d for d in col.of(AudioDelta) if d.response_id == done.response_id]
    assert len(deltas) == 8  # seven 100 ms chunks and a 30 ms one, each its own delta
    assert all(d.frame.sample_rate == 24000 and d.frame.channels == 1 for d in deltas)
    got = np.concatenate([d.frame.data[:, 0] for d in deltas])
    np.testing.assert_array_equal(got, pcm)
    await session.aclose()
    await col.aclose()
