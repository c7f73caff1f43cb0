"""Bounded messages and connections: oversize frames close the socket, extra peers get 429."""

from __future__ import annotations

import json

import aiohttp

from duplex.agents.vad import EnergyVAD
from duplex.backends.cascade import CascadeBackend, EchoLLM
from duplex.plugins.piper import PiperTTS
from duplex.plugins.whisper import WhisperSTT
from duplex.server.realtime import RealtimeServer, ServerOptions


async def test_message_size_and_connection_limits(whisper: WhisperSTT, piper: PiperTTS) -> None:
    options = ServerOptions(port=0, vad=EnergyVAD(), max_message_bytes=64 * 1024, max_connections=1)
    server = await RealtimeServer(CascadeBackend(whisper, EchoLLM(), piper), options).start()
    url = server.url.replace("http://", "ws://") + "/realtime?model=m"
    try:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(url)
            assert json.loads((await ws.receive()).data)["type"] == "session.created"
            async with http.get(server.url + "/realtime") as second:
                assert second.status == 429  # one connection allowed, one is open
            big = {"type": "input_audio_buffer.append", "audio": "A" * (128 * 1024)}
            await ws.send_str(json.dumps(big))
            msg = await ws.receive()
            while msg.type == aiohttp.WSMsgType.TEXT:
                msg = await ws.receive()
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert ws.close_code == 1009  # message too big
    finally:
        await server.stop()
