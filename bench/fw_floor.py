"""The floor: the least any realtime bridge in Python must do per call, and nothing more.

Not a framework. Each caller frame is decimated 48 -> 24 kHz by slicing, base64'd
into an append (the template duplex's uplink uses) and written on the socket without a task
(the cheapest send aiohttp allows); each reply delta is parsed, decoded, doubled
back to 48 kHz by repeating samples and played as 20 ms frames; a server
``speech_started`` clears the speaker. No VAD, no resampling filter, no chat
context, no reply bookkeeping, no error handling: what it costs is the price of
the wire protocol itself (one WebSocket message per ``BENCH_FLOOR_CHUNK_MS`` of
caller audio, default 20 ms) on asyncio + aiohttp, which any framework pays on
top of its own work. livekit-agents sends 100 ms appends; set the variable to 100
to see what that cadence alone is worth.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
from typing import Any

import aiohttp
import numpy as np

from duplex.agents import nowait
from duplex.backends.openai.appends import append_message

from . import config as C
from .clock import PlayoutClock

_ids = itertools.count()
OUT_FRAME = C.OUTPUT_RATE * C.FRAME_MS // 1000
BUFFER_FRAMES = 5


class FloorCall:
    errors = 0

    def __init__(
        self, url: str, sid: str, clock: PlayoutClock, http: aiohttp.ClientSession
    ) -> None:
        ws = url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        self._url = f"{ws}/realtime?model={sid}"
        self._clock = clock
        self._http = http
        self._chunk = int(os.environ.get("BENCH_FLOOR_CHUNK_MS", C.FRAME_MS)) // C.FRAME_MS
        self._pending: list[np.ndarray] = []
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._ws = await self._http.ws_connect(
            self._url, headers={"Authorization": "Bearer sk-bench"}, max_msg_size=0
        )
        self._reader = asyncio.create_task(self._read(self._ws))

    def push(self, pcm: np.ndarray) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            return
        self._pending.append(pcm[::2])
        if len(self._pending) < self._chunk:
            return
        data = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending)
        self._pending = []
        text = append_message(f"f{next(_ids)}", data.tobytes())
        waiting = nowait.start(ws.send_str(text))
        if waiting is not None:
            task = asyncio.create_task(waiting.finish())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        clock = self._clock
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            ev: dict[str, Any] = json.loads(msg.data)
            kind = ev["type"]
            if kind == "response.output_audio.delta":
                pcm = np.frombuffer(base64.b64decode(ev["delta"]), dtype="<i2").repeat(2)
                for i in range(0, pcm.size, OUT_FRAME):
                    frame = pcm[i : i + OUT_FRAME]  # what a transport would hand to WebRTC
                    await clock.wait_space(BUFFER_FRAMES)
                    clock.write(frame.size / C.OUTPUT_RATE)
            elif kind == "input_audio_buffer.speech_started":
                clock.clear()

    async def aclose(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
