"""The playground server: HTTP offer/answer signaling plus the page, one session per peer.

``POST /offer`` with ``{"sdp", "type": "offer", "session_id"?}`` answers with
``{"sdp", "type": "answer", "session_id"}`` once the agent's session for that
peer is running. Errors are JSON ``{"error": ...}``: 400 for an unusable offer,
409 when ``session_id`` names a live call, 503 when full, 500 when the app
failed to start. ``GET /`` is the playground, ``GET /health`` a liveness probe.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol

from aiohttp import web

from duplex.agents.app import translate_bind_errors

from .transport import SignalingError, WebRTCTransport

__all__ = ["PlaygroundServer", "SessionFactory"]

log = logging.getLogger(__name__)

_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_STATIC = {
    "index.html": "text/html",
    "playground.js": "text/javascript",
    "playground.css": "text/css",
    "recorder-worklet.js": "text/javascript",
}


class ClosableSession(Protocol):
    async def aclose(self) -> None: ...


#: Builds and starts the agent's session on a freshly negotiated transport.
SessionFactory = Callable[[WebRTCTransport], Awaitable[ClosableSession]]


@dataclass(eq=False)
class Peer:
    transport: WebRTCTransport
    session: ClosableSession | None = None
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)


class PlaygroundServer:
    """Serves many peers from one process; each gets its own transport and session."""

    def __init__(
        self,
        factory: SessionFactory,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        max_peers: int = 16,
        info: dict[str, Any] | None = None,
        transport_options: dict[str, Any] | None = None,
    ) -> None:
        self.factory = factory
        self.host = host
        self.port = port
        self.max_peers = max_peers
        #: Shown by /health and sent to each page on connect (app and backend names).
        self.info = dict(info or {})
        self.transport_options = dict(transport_options or {})
        self.peers: dict[str, Peer] = {}
        self.app = web.Application(client_max_size=256 * 1024)
        self.app.add_routes(
            [
                web.get("/", self._index),
                web.get("/static/{name}", self._static),
                web.get("/health", self._health),
                web.post("/offer", self._offer),
            ]
        )
        self._runner: web.AppRunner | None = None
        self._files = {name: _read_static(name) for name in _STATIC}

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    async def start(self) -> str:
        """Bind and serve; returns the URL (with the real port when ``port`` was 0)."""
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            with translate_bind_errors(self.host, self.port):
                await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self.url

    async def aclose(self) -> None:
        """Hang up every call, then stop serving."""
        peers = list(self.peers.values())
        await asyncio.gather(*(p.transport.aclose("server_closed") for p in peers))
        # Each watcher closes its session; a peer still in its offer gets none and is dropped.
        await asyncio.gather(*(p.watcher for p in peers if p.watcher is not None))
        for p in peers:
            if self.peers.get(p.transport.session_id) is p:
                del self.peers[p.transport.session_id]
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- handlers -----------------------------------------------------------------------
    async def _index(self, request: web.Request) -> web.Response:
        return self._file("index.html")

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC:
            raise web.HTTPNotFound()
        return self._file(name)

    def _file(self, name: str) -> web.Response:
        return web.Response(
            body=self._files[name],
            content_type=_STATIC[name],
            headers={"Cache-Control": "no-cache"},
        )

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "peers": len(self.peers), **self.info})

    async def _offer(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "the body must be JSON: {sdp, type: 'offer', session_id?}")
        if not isinstance(body, dict):
            return _error(400, "the body must be a JSON object")
        if body.get("type", "offer") != "offer":
            return _error(400, f"expected type 'offer', got {body.get('type')!r}")
        session_id = body.get("session_id")
        sdp = body.get("sdp")
        if not isinstance(sdp, str):
            return _error(400, "the offer needs its SDP as a string in 'sdp'")
        if session_id is not None and (
            not isinstance(session_id, str) or not _SESSION_ID.match(session_id)
        ):
            return _error(400, "session_id must be 1-64 letters, digits, '-' or '_'")
        if session_id is not None and session_id in self.peers:
            return _error(409, f"session {session_id} is live; hang up first or use a new id")
        if len(self.peers) >= self.max_peers:
            return _error(503, f"this server takes {self.max_peers} calls at once; all are busy")

        transport = WebRTCTransport(session_id=session_id, **self.transport_options)
        peer = Peer(transport)
        # Reserve the id before the first await so a concurrent duplicate gets 409.
        self.peers[transport.session_id] = peer
        try:
            answer = await transport.accept(sdp)
        except SignalingError as e:
            self.peers.pop(transport.session_id, None)
            log.info("refused an offer: %s", e)
            return _error(400, str(e))
        transport.send_json({"type": "session", "session_id": transport.session_id, **self.info})
        try:
            peer.session = await self.factory(transport)
        except Exception as e:
            log.exception("the agent failed to start for %s", transport.session_id)
            await transport.aclose("agent_failed")
            self.peers.pop(transport.session_id, None)
            return _error(500, f"the agent failed to start: {type(e).__name__}: {e}")
        peer.watcher = asyncio.get_running_loop().create_task(self._watch(peer))
        log.info("call %s started (%d live)", transport.session_id, len(self.peers))
        return web.json_response(
            {"type": "answer", "sdp": answer, "session_id": transport.session_id}
        )

    # --- lifecycle ----------------------------------------------------------------------
    async def _watch(self, peer: Peer) -> None:
        """When the call ends, however it ends, close its session and forget it.

        The one place a call is cleaned up, so a hang-up racing a server shutdown
        never closes a session twice or half-way.
        """
        transport = peer.transport
        await transport.closed.wait()
        if peer.session is not None:
            try:
                await peer.session.aclose()
            except Exception:
                log.exception("closing the session of %s failed", transport.session_id)
        if self.peers.get(transport.session_id) is peer:
            del self.peers[transport.session_id]
        log.info("call %s ended (%s)", transport.session_id, transport.close_reason)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _read_static(name: str) -> bytes:
    return (resources.files("duplex.plugins.webrtc") / "static" / name).read_bytes()
