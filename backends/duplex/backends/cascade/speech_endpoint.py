"""`SpeechEndpointTTS`: speech from an OpenAI-style ``/v1/audio/speech`` server.

Two wire variants: the HTTP endpoint streaming PCM (vLLM-Omni, OpenAI; raw bytes or
``speech.audio.delta`` SSE events, recognised by content type), and vLLM-Omni's
WebSocket ``/v1/audio/speech/stream`` (``session.config`` / ``input.text`` /
``input.done`` in; ``audio.start``, binary PCM, ``audio.done``, ``session.done`` out).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any, Literal

import aiohttp

from duplex.agents.audio import AudioFrame
from duplex.agents.errors import AudioFormatError
from duplex.agents.resample import LOW_LATENCY, Resampler
from duplex.agents.stages import TTS

from .chat_completions import api_root
from .errors import TTSError
from .sse import iter_sse_data


class _PcmFramer:
    """Bytes in any split -> frames of ``frame_ms``, resampled to the declared rate.

    Audio is passed on as it arrives: the first bytes go out at once (a short first
    frame rather than a wait for a full one), and resampling uses the low-latency
    filter, whose output does not lag its input by tens of milliseconds.
    """

    def __init__(self, in_rate: int, out_rate: int, frame_ms: float) -> None:
        self._carry = b""
        self._bytes = 2 * max(1, round(in_rate * frame_ms / 1000))
        self._in_rate = in_rate
        self._started = False
        self._resampler = (
            Resampler(in_rate, out_rate, quality=LOW_LATENCY) if in_rate != out_rate else None
        )

    def push(self, data: bytes, *, last: bool = False) -> list[AudioFrame]:
        buf = self._carry + data
        whole = last or not self._started  # the first bytes go out without waiting for more
        cut = len(buf) if whole else len(buf) - len(buf) % self._bytes
        cut -= cut % 2  # never split a sample
        self._started = self._started or cut > 0
        self._carry = buf[cut:] if not last else b""
        out: list[AudioFrame] = []
        for i in range(0, cut, self._bytes):
            out.extend(self._frame(buf[i : min(cut, i + self._bytes)]))
        if last and self._resampler is not None:
            tail = self._resampler.flush()
            if tail is not None:
                out.append(tail)
        return out

    def _frame(self, pcm: bytes) -> list[AudioFrame]:
        if not pcm:
            return []
        frame = AudioFrame.from_pcm16(pcm, self._in_rate)
        if self._resampler is None:
            return [frame]
        res = self._resampler.push(frame)
        return [res] if res is not None else []


class SpeechEndpointTTS(TTS):
    """Speaks through a speech server; ``sample_rate`` is the rate frames are delivered at.

    ``server_rate`` is the rate the server produces PCM at (Qwen3-TTS and Voxtral-TTS:
    24 kHz; raw PCM carries no header, so it must be known). Over the WebSocket the
    server announces it in ``audio.start`` and that value wins. ``stream_flag`` sends
    vLLM-Omni's ``"stream": true``; turn it off for servers that refuse unknown fields.
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        voice: str | None = None,
        transport: Literal["http", "websocket"] = "http",
        sample_rate: int = 24000,
        server_rate: int | None = None,
        api_key: str | None = None,
        language: str | None = None,
        instructions: str | None = None,
        stream_flag: bool = True,
        extra_body: dict[str, Any] | None = None,
        frame_ms: float = 40.0,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> None:
        root = api_root(base_url)
        self.http_url = root + "/audio/speech"
        self.ws_url = root.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        self.ws_url += "/audio/speech/stream"
        self.model = model
        self.voice = voice
        self.transport = transport
        self.sample_rate = sample_rate
        self.server_rate = server_rate or sample_rate
        self._api_key = api_key
        self.language = language
        self.instructions = instructions
        self.stream_flag = stream_flag
        self.extra_body = dict(extra_body or {})
        self.frame_ms = frame_ms
        self.timeout = timeout or aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
        self._http: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        url = self.ws_url if self.transport == "websocket" else self.http_url
        return f"SpeechEndpointTTS(url={url!r}, model={self.model!r}, voice={self.voice!r})"

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=self.timeout)
        return self._http

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def _params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"response_format": "pcm"}
        for key in ("model", "voice", "language", "instructions"):
            value = getattr(self, key)
            if value is not None:
                params[key] = value
        params.update(self.extra_body)
        return params

    def synthesize(self, text: str) -> AsyncIterator[AudioFrame]:
        if self.transport == "websocket":
            return self._synthesize_ws(text)
        return self._synthesize_http(text)

    # --- HTTP ---------------------------------------------------------------------------
    async def _synthesize_http(self, text: str) -> AsyncIterator[AudioFrame]:
        # extra_body may override stream_format (e.g. "sse"); both answers are understood.
        body = {"input": text, "stream_format": "audio", **self._params()}
        if self.stream_flag:
            body["stream"] = True
        framer = _PcmFramer(self.server_rate, self.sample_rate, self.frame_ms)
        try:
            async with self._session().post(
                self.http_url, json=body, headers=self._headers()
            ) as resp:
                if resp.status != 200:
                    detail = (await resp.content.read(2048)).decode("utf-8", errors="replace")
                    raise TTSError(
                        f"speech endpoint answered HTTP {resp.status}: {detail.strip()}",
                        code=f"http_{resp.status}",
                        recoverable=resp.status >= 500 or resp.status == 429,
                    )
                if resp.content_type == "text/event-stream":
                    async for frame in self._sse_frames(resp, framer):
                        yield frame
                else:
                    async for data in resp.content.iter_any():
                        for frame in framer.push(data):
                            yield frame
                for frame in framer.push(b"", last=True):
                    yield frame
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise TTSError(
                f"speech endpoint failed: {type(e).__name__}: {e}", code="tts_unreachable"
            ) from e
        except AudioFormatError as e:
            raise TTSError(f"speech endpoint sent bad audio: {e}", code="tts_bad_audio") from e

    async def _sse_frames(
        self, resp: aiohttp.ClientResponse, framer: _PcmFramer
    ) -> AsyncIterator[AudioFrame]:
        async for data in iter_sse_data(resp.content):
            try:
                event = json.loads(data)
            except ValueError:
                raise TTSError(
                    f"speech endpoint sent invalid JSON: {data[:200]!r}", code="tts_bad_event"
                ) from None
            kind = event.get("type") if isinstance(event, dict) else None
            if kind == "speech.audio.delta":
                for frame in framer.push(base64.b64decode(event.get("audio") or "")):
                    yield frame
            elif kind == "speech.audio.done":
                return
            elif kind == "speech.audio.error" or (isinstance(event, dict) and "error" in event):
                err = event.get("error")
                message = err.get("message") if isinstance(err, dict) else err
                raise TTSError(f"speech endpoint failed: {message}", code="tts_failed")
        raise TTSError("speech stream ended without speech.audio.done", code="tts_stream_cut")

    # --- WebSocket ----------------------------------------------------------------------
    async def _synthesize_ws(self, text: str) -> AsyncIterator[AudioFrame]:
        framer: _PcmFramer | None = None
        try:
            async with self._session().ws_connect(self.ws_url, headers=self._headers()) as ws:
                await ws.send_json(
                    {"type": "session.config", **self._params(), "stream_audio": True}
                )
                await ws.send_json({"type": "input.text", "text": text})
                await ws.send_json({"type": "input.done"})
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        if framer is None:  # audio before audio.start: trust the configured rate
                            framer = _PcmFramer(self.server_rate, self.sample_rate, self.frame_ms)
                        for frame in framer.push(msg.data):
                            yield frame
                        continue
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    event = json.loads(msg.data)
                    kind = event.get("type")
                    if kind == "audio.start":
                        rate = int(event.get("sample_rate") or self.server_rate)
                        framer = _PcmFramer(rate, self.sample_rate, self.frame_ms)
                    elif kind == "audio.done":
                        if framer is not None:
                            for frame in framer.push(b"", last=True):
                                yield frame
                        if event.get("error"):
                            raise TTSError(
                                "speech stream reported a failed sentence", code="tts_failed"
                            )
                    elif kind == "session.done":
                        await ws.send_json({"type": "session.close"})
                        return
                    elif kind == "error":
                        raise TTSError(
                            f"speech stream error: {event.get('message') or event.get('error')}",
                            code="tts_failed",
                        )
                raise TTSError("speech stream closed before session.done", code="tts_stream_cut")
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise TTSError(
                f"speech stream failed: {type(e).__name__}: {e}", code="tts_unreachable"
            ) from e
        except (ValueError, AudioFormatError) as e:
            raise TTSError(f"speech stream sent bad data: {e}", code="tts_bad_audio") from e

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
