"""A local OpenAI Realtime test server (aiohttp, 127.0.0.1, ephemeral port).

It speaks the protocol as the service does, GA and beta dialects, quirks
included: server VAD over the audio it is sent, acks per item, errors that name
the offending client event, the one-active-response rule, truncation checks. Its
replies are scripted with `Reply`. Every client event it receives and every event
it sends is validated against the openai SDK's own types (`schema.validate`);
violations are collected in ``schema_errors`` and the test fixture fails on them.

Fault injection: `Reply.close_after_chunks` (drop the socket mid-response),
`send_raw` (malformed JSON, unknown events), ``fail_next`` (an error answering
the next create/delete/...), ``refuse_connections`` (handshake failures).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from duplex.agents.audio import AudioFrame

from .server_conn import ServerConnection

API_KEY = "sk-test-duplex-0123456789"


@dataclass
class Reply:
    """One scripted response."""

    #: What the model says: the audio transcript, or the text of a text reply.
    text: str = "Hello there, how can I help?"
    audio_ms: int = 600
    #: (name, JSON arguments) of function calls made before (or instead of) speaking.
    function_calls: tuple[tuple[str, str], ...] = ()
    #: Answer in text although audio was asked for (a known model quirk).
    as_text: bool = False
    #: Pause after this many ms of audio until ``release`` is set or the response is cancelled.
    hold_after_ms: int | None = None
    release: asyncio.Event = field(default_factory=asyncio.Event)
    #: Fault: close the socket after this many audio chunks.
    close_after_chunks: int | None = None
    chunk_ms: int = 100
    #: Finish with this status instead of "completed" (e.g. "failed").
    status: str = "completed"
    #: Fault: after response.created, nothing (no output, no done) until cancelled.
    stall: bool = False
    #: The reply's audio (24 kHz mono) instead of a tone; ``audio_ms`` is then its length.
    audio: AudioFrame | None = None

    @property
    def speaks(self) -> bool:
        return bool(self.text) or not self.function_calls


@dataclass(frozen=True)
class FailedTranscript:
    """Script a transcription failure after ``partial`` was transcribed."""

    message: str = "audio could not be transcribed"
    partial: str = ""


class RealtimeTestServer:
    def __init__(self, *, echo_metadata: bool = True, api_key: str = API_KEY) -> None:
        self.echo_metadata = echo_metadata
        self.api_key = api_key
        self.replies: deque[Reply] = deque()
        self.transcripts: deque[str | FailedTranscript] = deque()
        self.connections: list[ServerConnection] = []
        self.received: list[tuple[int, dict[str, Any]]] = []
        self.sent: list[tuple[int, dict[str, Any]]] = []
        self.errors_sent: Counter[str] = Counter()
        self.schema_errors: list[str] = []
        #: event type -> (code, message) for the next client event of that type.
        self.fail_next: dict[str, tuple[str, str]] = {}
        #: HTTP status for the next handshakes (e.g. [503, 503] then accept).
        self.refuse_connections: deque[int] = deque()
        #: Start a server-initiated response just before handling the next response.create.
        self.race_next_create = False
        self.handshakes: list[dict[str, Any]] = []
        self.closing = False
        #: When each entry of ``received`` arrived (time.monotonic()).
        self.received_at: list[float] = []
        #: Hold points: a connection that reaches ``point`` waits until the event is set.
        #: "after_commit" (committed and acked, before transcription) and
        #: "before_response" (turn transcribed, before server VAD's response.created).
        self.holds: dict[str, asyncio.Event] = {}
        self.reached: dict[str, asyncio.Event] = {}
        #: A slow reader: while this event is clear, connections stop reading client events
        #: (aiohttp's reader then pauses the socket, so the client's writes back up).
        self.read_gate: asyncio.Event | None = None
        #: Makes the reply for a request nothing was scripted for (default: `Reply()`).
        self.default_reply: Callable[[], Reply] = Reply
        self._ids = itertools.count(1)
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- lifecycle ------------------------------------------------------------------------
    async def start(self) -> str:
        app = web.Application()
        for path in ("/v1/realtime", "/openai/v1/realtime", "/openai/realtime"):
            app.router.add_get(path, self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self.base_url

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def close(self) -> None:
        self.closing = True  # a client that redials while we close is refused, not served
        for c in list(self.connections):
            await c.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- helpers for tests ----------------------------------------------------------------
    def new_id(self, prefix: str) -> str:
        return f"{prefix}_srv{next(self._ids):06d}"

    def next_reply(self) -> Reply:
        return self.replies.popleft() if self.replies else self.default_reply()

    def next_transcript(self) -> str | FailedTranscript:
        return self.transcripts.popleft() if self.transcripts else "hello"

    def changed(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async def _wait() -> None:
            while not predicate():
                await self._changed.wait()

        await asyncio.wait_for(_wait(), timeout)

    @property
    def current(self) -> ServerConnection:
        return self.connections[-1]

    def received_types(self, conn: int | None = None) -> list[str]:
        return [e["type"] for n, e in self.received if conn is None or n == conn]

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [e for _, e in self.received if e["type"] == event_type]

    async def hold_point(self, point: str) -> None:
        """Called by a connection at ``point``; waits there if a test asked for it (once)."""
        release = self.holds.pop(point, None)
        if release is None:
            return
        self.reached.setdefault(point, asyncio.Event()).set()
        await release.wait()

    def hold_at(self, point: str) -> tuple[asyncio.Event, asyncio.Event]:
        """(reached, release) for the next connection that gets to ``point``."""
        release = self.holds[point] = asyncio.Event()
        reached = self.reached[point] = asyncio.Event()
        return reached, release

    def created_items(self, item_type: str, conn: int | None = None) -> list[dict[str, Any]]:
        """Items of ``item_type`` the client created (``conversation.item.create``)."""
        return [
            e["item"]
            for n, e in self.received
            if e["type"] == "conversation.item.create"
            and e["item"].get("type") == item_type
            and (conn is None or n == conn)
        ]

    async def send_raw(self, text: str) -> None:
        """Send a frame as is (no validation): malformed JSON, unknown events."""
        await self.current.ws.send_str(text)

    # --- handshake ------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.handshakes.append(
            {"path": request.path, "query": dict(request.query), "headers": dict(request.headers)}
        )
        if self.closing:
            return web.Response(status=503, text="shutting down")
        if self.refuse_connections:
            return web.Response(status=self.refuse_connections.popleft(), text="refused")
        auth = request.headers.get("Authorization", "")
        key = request.headers.get("api-key", "")
        if auth != f"Bearer {self.api_key}" and key != self.api_key:
            # The service's body: the message names the (masked) key that was refused.
            error = {
                "message": "Incorrect API key provided. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            }
            raise web.HTTPUnauthorized(
                text=json.dumps({"error": error}), content_type="application/json"
            )
        ws = web.WebSocketResponse(max_msg_size=32 * 1024 * 1024)
        await ws.prepare(request)
        beta = (
            request.headers.get("OpenAI-Beta") == "realtime=v1"
            or request.path == "/openai/realtime"
        )
        conn = ServerConnection(self, ws, len(self.connections), "beta" if beta else "ga")
        self.connections.append(conn)
        self.changed()
        await conn.run()
        self.changed()
        return ws
