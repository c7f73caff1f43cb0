"""A vLLM-Omni-style speech server for tests, speaking with the real Piper voice.

``POST /v1/audio/speech`` streams raw PCM16 (``stream_format: "audio"``) or
``speech.audio.delta`` SSE events (``stream_format: "sse"``);
``/v1/audio/speech/stream`` is the WebSocket variant: ``session.config``,
``input.text``, ``input.done`` in; ``audio.start``, binary PCM, ``audio.done``,
``session.done`` out; ``{"type": "error", "message": ...}`` on failure.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from aiohttp import WSMsgType, web


@dataclass
class SpeechLog:
    http: list[dict[str, Any]] = field(default_factory=list)
    ws: list[list[dict[str, Any]]] = field(default_factory=list)
    #: PCM bytes sent per request (Piper's output varies run to run, so tests compare to this).
    sent: list[int] = field(default_factory=list)


class SpeechServer:
    def __init__(
        self,
        chunk_bytes: int = 4096,
        *,
        synth: Callable[[str], bytes] | None = None,
        rate: int = 24000,
    ) -> None:
        #: Speaks instead of Piper when given (PCM16 at ``rate``), e.g. audio a test can decode.
        self.synth = synth
        if synth is None:
            from duplex.plugins.piper import default_voice, load_voice

            model, config = default_voice()
            self.voice = load_voice(model, config)
            self.rate: int = int(self.voice.config.sample_rate)
        else:
            self.rate = rate
        self.chunk_bytes = chunk_bytes
        self.log = SpeechLog()
        #: Fault: fail the next this-many requests.
        self.fail_next = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    def pcm(self, text: str) -> bytes:
        if self.synth is not None:
            return self.synth(text)
        from piper import SynthesisConfig

        repeatable = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
        chunks = self.voice.synthesize(text, syn_config=repeatable)
        audio: list[npt.NDArray[np.int16]] = [c.audio_int16_array for c in chunks]
        return np.concatenate(audio).astype("<i2").tobytes() if audio else b""

    async def start(self) -> SpeechServer:
        app = web.Application()
        app.router.add_post("/v1/audio/speech", self._http)
        app.router.add_get("/v1/audio/speech/stream", self._ws)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _http(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.log.http.append(body)
        if self.fail_next:
            self.fail_next -= 1
            return web.json_response(
                {"error": {"message": "TTS engine failed", "code": 500}}, status=500
            )
        if body.get("response_format") != "pcm":
            return web.json_response({"error": {"message": "tests serve pcm only"}}, status=400)
        pcm = await asyncio.to_thread(self.pcm, body.get("input", ""))
        self.log.sent.append(len(pcm))
        sse = body.get("stream_format") == "sse"
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream" if sse else "audio/pcm"}
        )
        await resp.prepare(request)
        for i in range(0, len(pcm), self.chunk_bytes):
            part = pcm[i : i + self.chunk_bytes]
            if sse:
                event = {
                    "type": "speech.audio.delta",
                    "audio": base64.b64encode(part).decode(),
                    "response_format": "pcm",
                }
                await resp.write(
                    f"event: speech.audio.delta\ndata: {json.dumps(event)}\n\n".encode()
                )
            else:
                await resp.write(part)
        if sse:
            done = {"type": "speech.audio.done", "usage": {"input_tokens": 1, "output_tokens": 1}}
            await resp.write(f"event: speech.audio.done\ndata: {json.dumps(done)}\n\n".encode())
        await resp.write_eof()
        return resp

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        events: list[dict[str, Any]] = []
        self.log.ws.append(events)
        config: dict[str, Any] | None = None
        text: list[str] = []
        utterance = 0
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                break
            event = json.loads(msg.data)
            events.append(event)
            kind = event.get("type")
            if kind == "session.config":
                config = event
            elif kind == "input.text":
                text.append(event.get("text", ""))
            elif kind == "input.done":
                if config is None:
                    await ws.send_json(
                        {"type": "error", "message": "session.config must come first"}
                    )
                    continue
                if self.fail_next:
                    self.fail_next -= 1
                    await ws.send_json({"type": "error", "message": "TTS engine failed"})
                    continue
                sentence = "".join(text)
                text.clear()
                await ws.send_json(
                    {
                        "type": "audio.start",
                        "utterance_index": utterance,
                        "sentence_index": 0,
                        "sentence_text": sentence,
                        "format": "pcm",
                        "sample_rate": self.rate,
                    }
                )
                pcm = await asyncio.to_thread(self.pcm, sentence)
                self.log.sent.append(len(pcm))
                for i in range(0, len(pcm), self.chunk_bytes):
                    await ws.send_bytes(pcm[i : i + self.chunk_bytes])
                await ws.send_json(
                    {
                        "type": "audio.done",
                        "utterance_index": utterance,
                        "sentence_index": 0,
                        "total_bytes": len(pcm),
                        "error": False,
                    }
                )
                await ws.send_json(
                    {"type": "session.done", "utterance_index": utterance, "total_sentences": 1}
                )
                utterance += 1
            elif kind == "session.close":
                break
        await ws.close()
        return ws
