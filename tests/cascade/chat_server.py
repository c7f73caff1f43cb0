"""A scripted ``/v1/chat/completions`` SSE server that streams chunks in vLLM's shape.

Each request takes the next script. A script is a list of steps:
``Text("...")`` (one content delta), ``Call(name, args, parts)`` (the first delta
carries id, type, index and name; the arguments follow in ``parts`` fragments,
exactly as vLLM's tool parsers stream them), ``Gate(event)`` (the stream pauses
until the test sets the event: a slow model without sleeps), ``Cut()`` (the
connection is closed mid-stream), ``Error(...)`` (an error chunk). The end adds
the ``finish_reason`` chunk, a usage chunk and ``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Text:
    text: str


@dataclass
class Call:
    name: str
    arguments: str
    parts: int = 3


@dataclass
class Gate:
    event: asyncio.Event


@dataclass
class Cut:
    pass


@dataclass
class Raw:
    """An SSE event's data written as is (for servers whose chunks differ from vLLM's)."""

    data: str


@dataclass
class Error:
    message: str
    code: int = 500


Step = Text | Call | Gate | Cut | Error | Raw


@dataclass
class Served:
    body: dict[str, Any]
    headers: dict[str, str]
    #: Set when the client went away before the stream ended (a cancelled reply).
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set when the handler is over, however it ended (finished, cut, failed, disconnected).
    ended: asyncio.Event = field(default_factory=asyncio.Event)


class ChatServer:
    def __init__(self, model: str = "Qwen/Qwen3-8B") -> None:
        self.model = model
        self.scripts: list[list[Step]] = []
        self.requests: list[Served] = []
        #: Answer the next request with this HTTP status and body instead of a stream.
        self.http_error: tuple[int, dict[str, Any]] | None = None
        #: Makes the script of a request nothing was scripted for (default: ``[Text("OK.")]``).
        self.default_script: Callable[[], list[Step]] = lambda: [Text("OK.")]
        #: Called with each request as it arrives (e.g. to snapshot the client's state).
        self.on_request: Callable[[Served], None] | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    def script(self, *steps: Step) -> None:
        self.scripts.append(list(steps))

    async def start(self) -> ChatServer:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        # handler_cancellation: a client that leaves cancels its handler, as vLLM aborts the
        # request when the client disconnects; that is how tests see a reply was cancelled.
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _chunk(self, cid: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
        obj = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "delta": delta,
                    "logprobs": None,
                    "finish_reason": finish,
                    "stop_reason": None,
                }
            ],
            "usage": None,
        }
        return f"data: {json.dumps(obj)}\n\n".encode()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        served = Served(body, dict(request.headers))
        self.requests.append(served)
        if self.on_request is not None:
            self.on_request(served)
        try:
            return await self._serve(request, served)
        finally:
            served.ended.set()

    async def _serve(self, request: web.Request, served: Served) -> web.StreamResponse:
        if self.http_error is not None:
            status, payload = self.http_error
            self.http_error = None
            return web.json_response(payload, status=status)
        steps = self.scripts.pop(0) if self.scripts else self.default_script()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        cid = f"chatcmpl-{uuid.uuid4().hex}"
        call_index = 0
        try:
            await resp.write(self._chunk(cid, {"role": "assistant", "content": ""}))
            for step in steps:
                if isinstance(step, Text):
                    await resp.write(self._chunk(cid, {"content": step.text, "reasoning": None}))
                elif isinstance(step, Call):
                    first = {
                        "id": f"chatcmpl-tool-{uuid.uuid4().hex[:16]}",
                        "type": "function",
                        "index": call_index,
                        "function": {"name": step.name, "arguments": None},
                    }
                    await resp.write(self._chunk(cid, {"tool_calls": [first]}))
                    size = max(1, -(-len(step.arguments) // step.parts))
                    for i in range(0, len(step.arguments), size):
                        frag = {
                            "index": call_index,
                            "function": {"arguments": step.arguments[i : i + size]},
                        }
                        await resp.write(self._chunk(cid, {"tool_calls": [frag]}))
                    call_index += 1
                elif isinstance(step, Gate):
                    await step.event.wait()  # a client leaving cancels this (handler_cancellation)
                elif isinstance(step, Error):
                    err = {
                        "object": "error",
                        "message": step.message,
                        "type": "InternalServerError",
                        "param": None,
                        "code": step.code,
                    }
                    await resp.write(f"data: {json.dumps(err)}\n\n".encode())
                    return resp
                elif isinstance(step, Raw):
                    await resp.write(f"data: {step.data}\n\n".encode())
                elif isinstance(step, Cut):
                    assert request.transport is not None
                    request.transport.close()
                    return resp
            finish = "tool_calls" if call_index else "stop"
            await resp.write(self._chunk(cid, {}, finish))
            usage = {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49}
            tail = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": self.model,
                "choices": [],
                "usage": usage,
            }
            await resp.write(f"data: {json.dumps(tail)}\n\n".encode())
            await resp.write(b"data: [DONE]\n\n")
            served.finished.set()
        except (ConnectionResetError, asyncio.CancelledError):
            served.disconnected.set()
            raise
        return resp
