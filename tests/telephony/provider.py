"""The provider's (Twilio's or Telnyx's) end of a media stream: the phone call as they send it.

`PhoneStream` is the provider's end of one stream (see `fake_api` for the REST side): it
sends the exact frames each provider sends (connected, start with metadata,
20 ms μ-law media, dtmf, stop) and plays what it receives on a clock,
echoing each mark only once the audio before it has been played; ``clear``
drops the unplayed audio and returns pending marks at once, as Twilio does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np

from duplex.agents import g711
from duplex.agents.audio import AudioFrame
from duplex.agents.resample import Resampler

CHUNK = 160  # 20 ms of 8 kHz μ-law
TWILIO_ACCOUNT = "AC" + "0" * 32
TWILIO_TOKEN = "twilio-test-token"
TELNYX_KEY = "KEYtelnyx-test"


@dataclass
class ApiRequest:
    provider: str
    call_id: str
    action: str
    body: dict[str, Any]


def to_ulaw_chunks(frame: AudioFrame) -> list[bytes]:
    """Speech at any rate -> 20 ms μ-law payloads (the last one padded with silence)."""
    mono = frame.to_mono()
    if mono.sample_rate != 8000:
        out = Resampler(mono.sample_rate, 8000).push(mono)
        assert out is not None
        mono = out
    data = g711.encode(mono, "ulaw")
    pad = (-len(data)) % CHUNK
    data += b"\xff" * pad  # μ-law silence
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


class PhoneStream:
    """The provider's side of one media stream (one phone call)."""

    def __init__(
        self,
        provider: str,
        call_id: str,
        *,
        parameters: dict[str, str] | None = None,
        encoding: str | None = None,
    ) -> None:
        self.provider = provider
        self.call_id = call_id
        self.stream_id = ("MZ" + uuid.uuid4().hex) if provider == "twilio" else str(uuid.uuid4())
        self.parameters = dict(parameters or {})
        self.encoding = encoding or ("audio/x-mulaw" if provider == "twilio" else "PCMU")
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._http: aiohttp.ClientSession | None = None
        self._seq = 0
        self._chunk = 0
        self._started_at = 0.0
        # What came from the agent, and what the caller has heard of it.
        self.received = bytearray()
        self.played = bytearray()
        self.marks_sent_to_us: list[str] = []
        self.marks_echoed: list[str] = []
        self.played_at_mark: dict[str, int] = {}  # mark -> bytes played when echoed
        self.clears = 0
        self.cleared_played_bytes: list[int] = []  # bytes played when each clear arrived
        self.frames_in: list[dict[str, Any]] = []
        self.first_audio_at: float | None = None
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self._queue: list[tuple[str, bytes | str]] = []  # ("audio", bytes) | ("mark", name)
        self._queued = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._progress = asyncio.Condition()
        #: Marks echoed because their audio was played (not returned by a clear).
        self.marks_played: list[str] = []
        #: False: a provider that loses every mark (plays the audio, never echoes).
        self.echo_marks = True
        self._cleared = asyncio.Condition()

    # --- connection -----------------------------------------------------------------------
    async def connect(self, url: str) -> PhoneStream:
        self._http = aiohttp.ClientSession()
        self.ws = await self._http.ws_connect(url, max_msg_size=1 << 22)
        self._started_at = asyncio.get_running_loop().time()
        self._tasks = [
            asyncio.create_task(self._receive()),
            asyncio.create_task(self._play_clock()),
        ]
        return self

    async def send_json(self, frame: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send_str(json.dumps(frame))

    def _next_seq(self) -> str:
        self._seq += 1
        return str(self._seq)

    def _ids(self) -> dict[str, str]:
        key = "streamSid" if self.provider == "twilio" else "stream_id"
        return {key: self.stream_id}

    async def begin(self) -> None:
        """``connected`` then ``start`` with the call's metadata."""
        if self.provider == "twilio":
            await self.send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
            start = {
                "accountSid": TWILIO_ACCOUNT,
                "streamSid": self.stream_id,
                "callSid": self.call_id,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": self.encoding, "sampleRate": 8000, "channels": 1},
                "customParameters": self.parameters,
            }
        else:
            await self.send_json({"event": "connected", "version": "1.0.0"})
            state = self.parameters.pop("client_state", None)
            start = {
                "user_id": str(uuid.uuid4()),
                "call_control_id": self.call_id,
                "call_session_id": str(uuid.uuid4()),
                "from": "+15551230000",
                "to": "+15559870000",
                "tags": [],
                "client_state": state,
                "custom_parameters": self.parameters,
                "media_format": {"encoding": self.encoding, "sample_rate": 8000, "channels": 1},
            }
        await self.send_json(
            {
                "event": "start",
                "sequence_number"
                if self.provider == "telnyx"
                else "sequenceNumber": self._next_seq(),
                "start": start,
                **self._ids(),
            }
        )

    # --- the caller ------------------------------------------------------------------------
    async def send_media(self, payload: bytes) -> None:
        self._chunk += 1
        now = asyncio.get_running_loop().time()
        media = {
            "track": "inbound",
            "chunk": str(self._chunk),
            "timestamp": str(int(1000 * (now - self._started_at))),
            "payload": base64.b64encode(payload).decode(),
        }
        seq = "sequenceNumber" if self.provider == "twilio" else "sequence_number"
        await self.send_json(
            {"event": "media", seq: self._next_seq(), "media": media, **self._ids()}
        )

    async def speak(self, frame: AudioFrame) -> None:
        """Send audio as the phone network does: one 20 ms chunk every 20 ms."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for i, chunk in enumerate(to_ulaw_chunks(frame)):
            due = t0 + i * 0.02
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            await self.send_media(chunk)

    async def silence(self, ms: float) -> None:
        n = round(ms / 20)
        await self.speak(AudioFrame(np.zeros((n * CHUNK, 1), np.int16), 8000, 1))

    async def press(self, digit: str) -> None:
        if self.provider == "twilio":
            frame = {
                "event": "dtmf",
                "streamSid": self.stream_id,
                "sequenceNumber": self._next_seq(),
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        else:
            frame = {
                "event": "dtmf",
                "stream_id": self.stream_id,
                "sequence_number": self._next_seq(),
                "occurred_at": "2026-12-01T12:00:00.000000Z",
                "dtmf": {"digit": digit},
            }
        await self.send_json(frame)

    async def stop(self) -> None:
        """The caller hung up: ``stop``, then the provider closes the socket."""
        if self.ws is None or self.ws.closed:
            return
        if self.provider == "twilio":
            body = {"accountSid": TWILIO_ACCOUNT, "callSid": self.call_id}
            frame = {"event": "stop", "sequenceNumber": self._next_seq(), "stop": body}
        else:
            body = {"call_control_id": self.call_id}
            frame = {"event": "stop", "sequence_number": self._next_seq(), "stop": body}
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.send_json({**frame, **self._ids()})
        await self.ws.close()

    # --- the phone's speaker ----------------------------------------------------------------
    @property
    def played_ms(self) -> float:
        return len(self.played) / 8.0

    @property
    def received_ms(self) -> float:
        return len(self.received) / 8.0

    def played_audio(self) -> AudioFrame:
        return g711.decode(bytes(self.played) or b"\xff", "ulaw", 8000)

    async def _receive(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            self.frames_in.append(frame)
            event = frame.get("event")
            if self.provider == "twilio":
                assert frame.get("streamSid") == self.stream_id, frame
            if event == "media":
                payload = base64.b64decode(frame["media"]["payload"])
                if self.first_audio_at is None:
                    self.first_audio_at = asyncio.get_running_loop().time()
                self.received += payload
                self._queue.append(("audio", payload))
            elif event == "mark":
                name = frame["mark"]["name"]
                self.marks_sent_to_us.append(name)
                self._queue.append(("mark", name))
            elif event == "clear":
                self.clears += 1
                self.cleared_played_bytes.append(len(self.played))
                marks = [v for k, v in self._queue if k == "mark"]
                self._queue.clear()
                for name in marks:  # returned at once: an echo after clear is not "played"
                    await self._echo(str(name))
                async with self._cleared:
                    self._cleared.notify_all()
            self._queued.set()
        self.close_code = self.ws.close_code
        self.closed.set()

    async def _echo(self, name: str) -> None:
        if not self.echo_marks:
            return
        self.marks_echoed.append(name)
        self.played_at_mark[name] = len(self.played)
        seq = "sequenceNumber" if self.provider == "twilio" else "sequence_number"
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.send_json(
                {"event": "mark", seq: self._next_seq(), "mark": {"name": name}, **self._ids()}
            )

    async def _play_clock(self) -> None:
        """Plays queued audio in real time; a mark is echoed when the audio before it played."""
        loop = asyncio.get_running_loop()
        next_tick: float | None = None
        while not self.closed.is_set():
            while self._queue and self._queue[0][0] == "mark":
                name = str(self._queue.pop(0)[1])
                self.marks_played.append(name)
                await self._echo(name)
            if not self._queue:
                next_tick = None
                self._queued.clear()
                await self._queued.wait()
                continue
            now = loop.time()
            next_tick = now if next_tick is None or next_tick < now - 0.1 else next_tick
            kind, audio = self._queue[0]
            assert isinstance(audio, bytes)
            take, rest = audio[:CHUNK], audio[CHUNK:]
            if rest:
                self._queue[0] = (kind, rest)
            else:
                self._queue.pop(0)
            if next_tick > now:
                await asyncio.sleep(next_tick - now)
            self.played += take
            next_tick += len(take) / 8000.0
            await self._notify()

    async def wait_played(self, ms: float, timeout: float = 30.0) -> None:
        async def wait() -> None:
            async with self._progress:
                await self._progress.wait_for(lambda: self.played_ms >= ms)

        await asyncio.wait_for(wait(), timeout)

    async def wait_clears(self, n: int = 1, timeout: float = 10.0) -> None:
        """Until ``n`` ``clear`` frames arrived (and their marks were returned)."""

        async def wait() -> None:
            async with self._cleared:
                await self._cleared.wait_for(lambda: self.clears >= n)

        await asyncio.wait_for(wait(), timeout)

    async def _notify(self) -> None:
        async with self._progress:
            self._progress.notify_all()

    async def wait_quiet(self, quiet_s: float = 1.0, timeout: float = 60.0) -> None:
        """Until audio started and then nothing new arrived or played for ``quiet_s``."""

        async def wait() -> None:
            last = (-1, -1)
            while True:
                await asyncio.sleep(quiet_s)
                now = (len(self.received), len(self.played))
                if now == last and self.received and not self._queue:
                    return
                last = now

        await asyncio.wait_for(wait(), timeout)

    async def aclose(self) -> None:
        if self.ws is not None and not self.ws.closed:
            await self.ws.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._http is not None:
            await self._http.close()
