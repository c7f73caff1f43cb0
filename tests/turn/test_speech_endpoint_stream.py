"""SpeechEndpointTTS hands on the first audio bytes at once instead of waiting for a full frame."""

from __future__ import annotations

import asyncio

import numpy as np
from aiohttp import web

from duplex.backends.cascade import SpeechEndpointTTS


async def test_first_audio_is_passed_on_before_the_server_sends_more() -> None:
    more = asyncio.Event()
    first_pcm = (np.arange(250, dtype=np.int16) * 10).tobytes()  # ~10 ms at 24 kHz

    async def speech(request: web.Request) -> web.StreamResponse:
        await request.json()
        resp = web.StreamResponse(headers={"Content-Type": "audio/pcm"})
        await resp.prepare(request)
        await resp.write(first_pcm)
        await more.wait()  # the rest only once the client has played the start
        await resp.write(np.zeros(2400, np.int16).tobytes())
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/audio/speech", speech)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    tts = SpeechEndpointTTS(f"http://127.0.0.1:{port}/v1", "tts", sample_rate=24000)
    try:
        stream = tts.synthesize("Hello.")
        first = await asyncio.wait_for(anext(stream), 10)  # type: ignore[call-overload]
        assert first.samples_per_channel == 250 and first.data[1, 0] == 10
        more.set()
        rest = [f async for f in stream]  # type: ignore[attr-defined]
        assert sum(f.samples_per_channel for f in rest) == 2400
    finally:
        await tts.aclose()
        await runner.cleanup()
