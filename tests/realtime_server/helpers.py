"""Drive the server with the openai SDK's own realtime client and listen to what it says."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
from openai import AsyncOpenAI

from duplex.agents.audio import AudioFrame
from duplex.agents.resample import Resampler

from ..speech import concat, silence, speak
from .conftest import API_KEY, Checked


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def utterance(text: str, rate: int = 24000) -> AudioFrame:
    """Speech with silence either side, long enough for server VAD to end the turn."""
    return concat(silence(0.3, rate), speak(text, rate), silence(0.9, rate))


def chunks(frame: AudioFrame, ms: int = 100) -> list[str]:
    """Base64 PCM16 appends of ``ms`` each."""
    pcm = frame.to_pcm16()
    step = frame.sample_rate * 2 * ms // 1000
    return [base64.b64encode(pcm[i : i + step]).decode() for i in range(0, len(pcm), step)]


def hear(audio: bytes | AudioFrame) -> str:
    """What Whisper understands of reply audio (PCM16 24 kHz bytes, or a frame at any rate)."""
    from duplex.plugins.whisper import load_whisper, transcribe

    frame = AudioFrame.from_pcm16(audio, 24000) if isinstance(audio, bytes) else audio.to_mono()
    rs = Resampler(frame.sample_rate, 16000)
    parts = [f for f in (rs.push(frame), rs.flush()) if f is not None]
    audio = AudioFrame.concat(parts).data[:, 0].astype(np.float32) / 32768.0
    return transcribe(load_whisper(), audio)


class SDKClient:
    """One ``client.realtime.connect`` (or beta) connection; events collected as they come."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.events: list[Any] = []
        self._changed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for ev in self.conn:
                self.events.append(ev)
                self._changed.set()
                self._changed = asyncio.Event()

    def of(self, kind: str) -> list[Any]:
        return [e for e in self.events if e.type == kind]

    async def wait_for(
        self,
        kind: str,
        pred: Callable[[Any], bool] | None = None,
        *,
        after: int = 0,
        timeout: float = 60.0,
    ) -> Any:
        async def scan() -> Any:
            seen = after
            while True:
                for ev in self.events[seen:]:
                    if ev.type == kind and (pred is None or pred(ev)):
                        return ev
                seen = len(self.events)
                await self._changed.wait()

        return await asyncio.wait_for(scan(), timeout)

    async def send(self, event: dict[str, Any]) -> None:
        await self.conn.send(event)

    async def say(self, frame: AudioFrame) -> None:
        for data in chunks(frame):
            await self.conn.input_audio_buffer.append(audio=data)

    def audio_of(self, response_id: str, kind: str = "response.output_audio.delta") -> bytes:
        return b"".join(
            base64.b64decode(e.delta) for e in self.of(kind) if e.response_id == response_id
        )


@contextlib.asynccontextmanager
async def connect(
    server: Checked, *, beta: bool = False, api_key: str = API_KEY
) -> AsyncIterator[SDKClient]:
    # The beta client always dials wss:// unless given a websocket base URL.
    ws_url = server.url.replace("http://", "ws://") if beta else None
    client = AsyncOpenAI(base_url=server.url, api_key=api_key, websocket_base_url=ws_url)
    realtime = client.beta.realtime if beta else client.realtime
    async with realtime.connect(model="duplex-cascade") as conn:
        sdk = SDKClient(conn)
        try:
            yield sdk
        finally:
            sdk._task.cancel()
    await client.close()
