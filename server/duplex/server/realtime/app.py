"""The HTTP side: ``GET /v1/realtime?model=...`` upgraded to a WebSocket, keys, limits.

Binds 127.0.0.1 unless told otherwise. Keys are compared in constant time and never
logged. The dialect is the client's choice: ``OpenAI-Beta: realtime=v1`` gets the beta
protocol, anything else the GA one.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aiohttp import web

from duplex.agents.vad import VAD
from duplex.backends.cascade import CascadeBackend

from .connection import ConnectionOptions, RealtimeConnection
from .protocol import Dialect
from .wire import EventHook

logger = logging.getLogger(__name__)

#: Browsers cannot set headers on a WebSocket: the service reads the key from this subprotocol.
_KEY_PROTOCOL = "openai-insecure-api-key."


def default_vad() -> VAD:
    """Silero when installed (its probabilities suit server_vad's threshold), else WebRTC."""
    try:
        from duplex.plugins.silero import SileroVAD

        return SileroVAD()
    except Exception:
        pass
    try:
        from duplex.plugins.webrtcvad import WebRTCVAD

        return WebRTCVAD()
    except Exception:
        from duplex.agents.vad import EnergyVAD

        return EnergyVAD()


@dataclass
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    #: Bearer keys accepted; empty means no authentication (loopback use).
    api_keys: Sequence[str] = ()
    #: Largest WebSocket message accepted (an append of 15 MiB of base64 fits).
    max_message_bytes: int = 16 * 1024 * 1024
    max_connections: int = 100
    connection: ConnectionOptions = field(default_factory=ConnectionOptions)
    #: The VAD behind server_vad (shared; each connection opens its own stream of it).
    vad: VAD | None = None
    #: Sees every server event (tests validate each against the SDK's unions).
    event_hook: EventHook | None = None


def _error(status: int, code: str, message: str) -> web.Response:
    body = {"error": {"type": "invalid_request_error", "code": code, "message": message}}
    return web.json_response(body, status=status)


class RealtimeServer:
    """An OpenAI-Realtime-compatible endpoint in front of a `CascadeBackend`.

    Every connection gets its own cascade session (its own STT stream, conversation and
    reply); the stages (loaded models, HTTP pools) are shared.
    """

    def __init__(self, backend: CascadeBackend, options: ServerOptions | None = None) -> None:
        self.backend = backend
        self.options = options or ServerOptions()
        self._runner: web.AppRunner | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.port = self.options.port
        self.vad = self.options.vad or default_vad()

    @property
    def url(self) -> str:
        """Base URL for an OpenAI client (``base_url``); the WebSocket is ``{url}/realtime``."""
        return f"http://{self.options.host}:{self.port}/v1"

    @property
    def connections(self) -> int:
        return len(self._connections)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/realtime", self._handle)
        app.router.add_get("/healthz", self._health)
        return app

    async def start(self) -> RealtimeServer:
        await self.backend.prewarm()
        self._runner = web.AppRunner(self.app(), handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.options.host, self.options.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()  # closes the sockets; each connection then ends
            self._runner = None

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "connections": self.connections})

    def _authorized(self, request: web.Request) -> bool:
        keys = self.options.api_keys
        if not keys:
            return True
        given = ""
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        for proto in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
            proto = proto.strip()
            if proto.startswith(_KEY_PROTOCOL):
                given = proto[len(_KEY_PROTOCOL) :]
        ok = False
        for key in keys:  # compare with every key, so timing does not tell which one matched
            ok |= hmac.compare_digest(given.encode(), key.encode())
        return ok

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return _error(
                401,
                "invalid_api_key",
                "Incorrect API key provided. Send 'Authorization: Bearer KEY'.",
            )
        if self.connections >= self.options.max_connections:
            return _error(429, "too_many_connections", "The server is at its connection limit.")
        dialect: Dialect = (
            "beta" if "realtime=v1" in request.headers.get("OpenAI-Beta", "") else "ga"
        )
        protocols = [
            p.strip()
            for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
            if p.strip() == "realtime"
        ]
        ws = web.WebSocketResponse(
            max_msg_size=self.options.max_message_bytes, heartbeat=30.0, protocols=protocols
        )
        await ws.prepare(request)
        conn = RealtimeConnection(
            ws,
            dialect,
            self.backend,
            self.vad,
            self.options.connection,
            model=request.query.get("model"),
            hook=self.options.event_hook,
        )
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await conn.run()
        except Exception:
            logger.exception("realtime connection failed")
        finally:
            self._connections.discard(task)
            if not ws.closed:
                await ws.close()
        return ws


async def serve(
    backend: CascadeBackend,
    options: ServerOptions | None = None,
    *,
    on_ready: Callable[[RealtimeServer], None] | None = None,
) -> None:
    """Run until cancelled (Ctrl+C)."""
    server = await RealtimeServer(backend, options).start()
    if on_ready is not None:
        on_ready(server)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()
        await backend.aclose()
