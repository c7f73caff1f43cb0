"""A vLLM ``/v1/realtime`` server for tests, quirks included, transcribing with real Whisper.

It follows vLLM's connection state machine (vllm/entrypoints/openai/realtime/
connection.py): ``session.created`` on accept; ``session.update`` with a TOP-LEVEL
model, acknowledged by nothing; a plain commit starts a generation that reads an
audio queue until ``commit{final: true}`` puts the end marker in it; audio left in
the queue when ``transcription.done`` is sent (appended after final) is dropped;
errors are ``{"type": "error", "error": "<string>", "code": ...}``.

Like vLLM under uvicorn it pings every connection every ``ping_interval`` seconds
(uvicorn's default: 20) and closes one whose pong is ``ping_timeout`` late (default
20); with ``api_key`` set it refuses another bearer key with HTTP 401 at the
handshake (``vllm serve --api-key``). ``python -m tests.cascade.vllm_server --port N``
runs it as a process, so a test can kill it and start it again; it reports what it
received as JSON lines on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import json
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from aiohttp import WSMsgType, web

Transcriber = Callable[[npt.NDArray[np.int16]], str]
_END = None  # what commit{final: true} puts in the audio queue


def whisper_transcriber() -> Transcriber:
    """Transcripts come from the same loader WhisperSTT uses (one model per process)."""
    from duplex.plugins.whisper import load_whisper, transcribe

    model = load_whisper()

    def run(audio: npt.NDArray[np.int16]) -> str:
        return transcribe(model, audio.astype(np.float32) / 32768.0)

    return run


@dataclass
class Connection:
    """What one client connection did, for assertions."""

    events: list[dict[str, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    #: Audio (int16) each generation consumed, in order.
    generations: list[npt.NDArray[np.int16]] = field(default_factory=list)
    appends: int = 0
    dropped_samples: int = 0
    pings: int = 0
    pongs: int = 0
    #: Closed by the keepalive because a pong was late (uvicorn: 1011 "keepalive ping timeout").
    keepalive_closed: bool = False


class VLLMRealtimeServer:
    def __init__(
        self,
        transcriber: Transcriber,
        *,
        models: tuple[str, ...] = ("mistralai/Voxtral-Mini-4B-Realtime-2602",),
        max_audio_mb: float = 25.0,
        api_key: str | None = None,
        ping_interval: float | None = 20.0,
        ping_timeout: float = 20.0,
        port: int = 0,
    ) -> None:
        self.transcriber = transcriber
        self.api_key = api_key
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.port = port
        #: Called with a small dict per notable event (the process mode prints them).
        self.report: Callable[[dict[str, Any]], None] = lambda _event: None
        self.models = models
        self.max_samples = int(max_audio_mb * 1024 * 1024)
        self.connections: list[Connection] = []
        #: Fault: close the socket of the next connection after this many appends (once).
        self.drop_after_appends: int | None = None
        #: Fault: the next generation fails with processing_error and sends no done.
        self.fail_next_generation = False
        #: Fault: the next generation never ends (a stalled engine): no done, no error.
        self.stall_next_generation = False
        #: Fault: raw frames sent as soon as the next generation starts (garbage, wrong shapes).
        self.inject_next: list[str] = []
        #: Fault: the next connections send this raw frame instead of session.created.
        self.bad_first_frames: list[str] = []
        #: Fault: the next connection never answers the client's pings (a black-holed peer).
        self.deaf_next = False
        #: Handshakes seen, refused ones included.
        self.handshakes = 0
        #: Set when a generation has consumed this many samples (for ordering in tests).
        self.first_append = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Event()
        self.url = ""

    async def start(self) -> VLLMRealtimeServer:
        app = web.Application()
        app.router.add_get("/v1/realtime", self._handle)
        # A stopped server goes away at once (open sockets are cut), like a killed vLLM.
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def changed(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """For tests: until ``predicate`` holds (checked whenever the server's state changes)."""

        async def wait() -> None:
            while not predicate():
                await self._changed.wait()

        await asyncio.wait_for(wait(), timeout)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- one connection ---------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        self.handshakes += 1
        auth = request.headers.get("Authorization")
        if self.api_key is not None and auth != f"Bearer {self.api_key}":
            raise web.HTTPUnauthorized(
                text=json.dumps({"error": "Unauthorized"}), content_type="application/json"
            )
        # Pings and pongs are handled here (autoping off) so the keepalive sees every pong.
        ws = web.WebSocketResponse(max_msg_size=64 * 1024 * 1024, autoping=False)
        await ws.prepare(request)
        conn = Connection()
        self.connections.append(conn)
        self.changed()
        pong = asyncio.Event()
        keepalive = asyncio.create_task(self._keepalive(ws, conn, pong))
        deaf, self.deaf_next = self.deaf_next, False
        drop_after, self.drop_after_appends = self.drop_after_appends, None
        state: dict[str, Any] = {"model": None, "generation": None}
        queue: asyncio.Queue[npt.NDArray[np.int16] | None] = asyncio.Queue()

        async def send(event: dict[str, Any]) -> None:
            conn.sent.append(event)
            if not ws.closed:
                await ws.send_str(json.dumps(event))

        async def error(message: str, code: str) -> None:
            await send({"type": "error", "error": message, "code": code})

        if self.bad_first_frames:
            await ws.send_str(self.bad_first_frames.pop(0))
        else:
            sid = f"sess-{uuid.uuid4()}"
            await send({"type": "session.created", "id": sid, "created": int(time.time())})
        try:
            async for msg in ws:
                if msg.type == WSMsgType.PING:
                    if not deaf:
                        await ws.pong(msg.data)
                    continue
                if msg.type == WSMsgType.PONG:
                    conn.pongs += 1
                    pong.set()
                    self.changed()
                    continue
                if msg.type == WSMsgType.BINARY:
                    await ws.close()  # vLLM's handler dies on a binary frame
                    break
                if msg.type != WSMsgType.TEXT:
                    break
                try:
                    event = json.loads(msg.data)
                except ValueError:
                    await error("Invalid JSON", "invalid_json")
                    continue
                conn.events.append(event)
                kind = event.get("type")
                if kind == "session.update":
                    model = event.get("model")
                    if model is None:
                        await error("Missing required field: model", "invalid_event")
                    elif model not in self.models:
                        await error(f"The model `{model}` does not exist.", "model_not_found")
                    else:
                        state["model"] = model  # success: nothing is sent back
                elif kind == "input_audio_buffer.append":
                    if "audio" not in event:
                        await error("'audio'", "processing_error")
                        continue
                    try:
                        raw = base64.b64decode(event["audio"], validate=True)
                    except (binascii.Error, ValueError, TypeError) as e:
                        await error(f"Invalid base64 audio: {e}", "invalid_audio")
                        continue
                    if not raw or len(raw) % 2 or len(raw) // 2 > self.max_samples:
                        await error(
                            "Invalid audio: empty, odd length or too large", "invalid_audio"
                        )
                        continue
                    conn.appends += 1
                    self.report({"append": conn.appends, "connection": len(self.connections)})
                    queue.put_nowait(np.frombuffer(raw, "<i2").astype(np.int16))
                    self.first_append.set()
                    if drop_after is not None and conn.appends >= drop_after:
                        await ws.close()
                        break
                elif kind == "input_audio_buffer.commit":
                    if state["model"] is None:
                        await error(
                            "Model not validated; send session.update first", "model_not_validated"
                        )
                    elif event.get("final", False):
                        queue.put_nowait(_END)
                    elif state["generation"] is not None and not state["generation"].done():
                        pass  # vLLM logs "generation already in progress" and ignores it
                    else:
                        state["generation"] = asyncio.create_task(
                            self._generate(conn, queue, send, error)
                        )
                        inject, self.inject_next = self.inject_next, []
                        for raw in inject:
                            await ws.send_str(raw)
                else:
                    await error(f"Unknown event type: {kind}", "unknown_event")
        finally:
            keepalive.cancel()
            gen = state["generation"]
            if gen is not None and not gen.done():
                gen.cancel()
        return ws

    async def _keepalive(
        self, ws: web.WebSocketResponse, conn: Connection, pong: asyncio.Event
    ) -> None:
        """uvicorn's loop: ping every interval; no pong within the timeout closes the socket."""
        if self.ping_interval is None:
            return
        while not ws.closed:
            await asyncio.sleep(self.ping_interval)
            pong.clear()
            try:
                await ws.ping()
            except (ConnectionError, RuntimeError):
                return
            conn.pings += 1
            try:
                await asyncio.wait_for(pong.wait(), self.ping_timeout)
            except asyncio.TimeoutError:
                conn.keepalive_closed = True
                self.report({"keepalive_closed": True})
                self.changed()
                await ws.close(code=1011, message=b"keepalive ping timeout")
                return

    async def _generate(
        self, conn: Connection, queue: asyncio.Queue[Any], send: Any, error: Any
    ) -> None:
        if self.stall_next_generation:
            self.stall_next_generation = False
            await asyncio.Event().wait()  # like a stalled engine: nothing, ever
        chunks: list[npt.NDArray[np.int16]] = []
        while True:
            item = await queue.get()
            if item is _END:
                break
            chunks.append(item)
        audio = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
        conn.generations.append(audio)
        self.report({"generation": int(audio.size)})
        if self.fail_next_generation:
            self.fail_next_generation = False
            await error("Engine core failed", "processing_error")
            return  # like an engine failure: no done
        text = await asyncio.to_thread(self.transcriber, audio) if audio.size else ""
        await send({"type": "transcription.delta", "delta": ""})  # vLLM may send empty steps
        words = text.split(" ")
        for i, word in enumerate(words):
            if word:
                await send({"type": "transcription.delta", "delta": word if i == 0 else " " + word})
        prompt = int(audio.size / 16000 * 12.5)
        completion = len(words)
        await send(
            {
                "type": "transcription.done",
                "text": text,
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                    "prompt_tokens_details": None,
                },
            }
        )
        # Like vLLM, the queue is drained after done: audio appended after final is lost.
        while not queue.empty():
            item = queue.get_nowait()
            if item is not _END:
                conn.dropped_samples += item.size


# --- process mode -------------------------------------------------------------------------
async def _serve(args: argparse.Namespace) -> None:
    server = VLLMRealtimeServer(
        whisper_transcriber(),
        api_key=args.api_key,
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_timeout,
        port=args.port,
    )

    def report(event: dict[str, Any]) -> None:
        print(json.dumps(event), flush=True)

    server.report = report
    await server.start()
    report({"ready": server.url})
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="vLLM /v1/realtime test double (127.0.0.1)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--ping-interval", type=float, default=20.0)
    parser.add_argument("--ping-timeout", type=float, default=20.0)
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
