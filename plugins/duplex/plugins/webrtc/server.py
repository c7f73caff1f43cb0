"""The playground server: HTTP offer/answer signaling plus the page, one session per peer.

``POST /offer`` with ``{"sdp", "type": "offer", "session_id"?}`` answers with
``{"sdp", "type": "answer", "session_id"}`` once the agent's session for that
peer is running. Errors are JSON ``{"error": ...}``: 400 for an unusable offer,
401 without the token (when one is set), 403 for a Host or Origin not allowed,
409 when ``session_id`` names a live call, 415 when the body is not JSON, 429 when
a peer offers too fast or holds too many unanswered calls, 503 when full or draining,
500 when the app failed to start (details only in the log). ``GET /`` is the playground,
``GET /health`` a liveness probe (with the worker table when run as one of several
workers). A call is one offer: its media and data channel then flow over the peer
connection this process holds, so no later request needs to reach the same worker.
See docs/security.md for the threat model.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol

from aiohttp import web

from duplex.agents.errors import ConfigurationError
from duplex.agents.serving import AppServer, draining_response

from .guard import TOKEN_ENV, AccessPolicy, BucketsByKey, RateLimit, is_loopback
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

#: Offers one address may make: 10 at once, then one every 3 s.
DEFAULT_OFFER_RATE = RateLimit(burst=10, per_s=1 / 3)
#: Calls one address may hold before its media flows (what an HTTP-only stranger can hold).
DEFAULT_MAX_PENDING_PER_PEER = 4


@dataclass(eq=False)
class Peer:
    transport: WebRTCTransport
    remote: str = ""
    session: ClosableSession | None = None
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)


class PlaygroundServer(AppServer):
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
        token: str | None = None,
        allowed_hosts: tuple[str, ...] = (),
        allowed_origins: tuple[str, ...] = (),
        offer_rate: RateLimit = DEFAULT_OFFER_RATE,
        max_pending_per_peer: int = DEFAULT_MAX_PENDING_PER_PEER,
        reuse_port: bool = False,
        on_load: Callable[[int], None] | None = None,
        status: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        """``token`` (or none): required as ``Authorization: Bearer <token>`` on /offer.

        It is mandatory when ``host`` is not a loopback address. ``allowed_hosts`` and
        ``allowed_origins`` extend the Host/Origin allow-lists (``"*"`` host: any).
        As a worker: ``reuse_port`` shares the port with siblings, ``on_load(calls)`` is
        told each change of the calls in progress, ``status()`` adds to ``/health``.
        """
        self.factory = factory
        self.max_peers = max_peers
        #: Shown by /health and sent to each page on connect (app and backend names).
        self.info = dict(info or {})
        self.transport_options = dict(transport_options or {})
        self.policy = AccessPolicy.build(
            host, token=token, allowed_hosts=allowed_hosts, allowed_origins=allowed_origins
        )
        if self.policy.token is None and not is_loopback(host):
            raise ConfigurationError(
                f"serving on {host or 'every interface'} lets other machines call the "
                f"agent: set a token (--token, or ${TOKEN_ENV}) or bind 127.0.0.1"
            )
        self.max_pending_per_peer = max_pending_per_peer
        self._offers = BucketsByKey(offer_rate)
        self.peers: dict[str, Peer] = {}
        self.status = status
        app = web.Application(client_max_size=256 * 1024, middlewares=[self._guard])
        app.add_routes(
            [
                web.get("/", self._index),
                web.get("/static/{name}", self._static),
                web.get("/health", self._health),
                web.post("/offer", self._offer),
            ]
        )
        super().__init__(app, host, port, reuse_port=reuse_port, on_load=on_load)
        self._files = {name: _read_static(name) for name in _STATIC}

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def _load_changed(self) -> None:
        self.load.changed(len(self.peers))

    async def aclose(self) -> None:
        """Hang up every call, then stop serving."""
        peers = list(self.peers.values())
        await asyncio.gather(*(p.transport.aclose("server_closed") for p in peers))
        # Each watcher closes its session; a peer still in its offer gets none and is dropped.
        await asyncio.gather(*(p.watcher for p in peers if p.watcher is not None))
        for p in peers:
            if self.peers.get(p.transport.session_id) is p:
                del self.peers[p.transport.session_id]
        self._load_changed()
        await self.stop_serving()

    # --- access control -----------------------------------------------------------------
    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Host on every request (DNS rebinding); Origin on every non-GET (cross-site POSTs)."""
        host = request.headers.get("Host")
        if not self.policy.host_allowed(host):
            log.warning("refused a request for host %r from %s", host, request.remote)
            return _error(403, "this host name is not allowed")
        if request.method not in ("GET", "HEAD", "OPTIONS") and not self.policy.origin_allowed(
            request.headers.get("Origin"), host, request.scheme
        ):
            log.warning(
                "refused a cross-origin %s from %r", request.method, request.headers.get("Origin")
            )
            return _error(403, "this origin is not allowed")
        return await handler(request)

    def _authorized(self, request: web.Request) -> bool:
        auth = request.headers.get("Authorization", "")
        scheme, _, presented = auth.partition(" ")
        return self.policy.token_ok(presented.strip() if scheme.lower() == "bearer" else None)

    def _pending_from(self, remote: str) -> int:
        return sum(
            1
            for p in self.peers.values()
            if p.remote == remote and not p.transport.media_started.is_set()
        )

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
        body: dict[str, Any] = {"status": "draining" if self.draining else "ok"}
        body.update(peers=len(self.peers), **self.info)
        if self.status is not None:
            body.update(self.status())
        return web.json_response(body)

    async def _offer(self, request: web.Request) -> web.Response:
        remote = request.remote or "?"
        if self.draining:
            return draining_response()
        if not self._authorized(request):
            log.warning("refused an offer without a valid token from %s", remote)
            return _error(401, "a valid token is required (Authorization: Bearer <token>)")
        if not self._offers.take(remote):
            log.warning("refused an offer from %s: too many offers", remote)
            return _error(429, "too many offers; wait a few seconds")
        if request.content_type != "application/json":
            return _error(415, "the body must be JSON (Content-Type: application/json)")
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError, RecursionError):
            return _error(400, "the body must be JSON: {sdp, type: 'offer', session_id?}")
        if not isinstance(body, dict):
            return _error(400, "the body must be a JSON object")
        if body.get("type", "offer") != "offer":
            return _error(400, "expected type 'offer'")
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
        if self._pending_from(remote) >= self.max_pending_per_peer:
            return _error(429, "too many calls from this address are still connecting")

        transport = WebRTCTransport(session_id=session_id, **self.transport_options)
        peer = Peer(transport, remote)
        # Reserve the id before the first await so a concurrent duplicate gets 409.
        self.peers[transport.session_id] = peer
        self._load_changed()
        released, reason = False, "bad_offer"
        try:
            try:
                answer = await transport.accept(sdp)
            except SignalingError as e:
                log.info("refused an offer from %s: %s", remote, e.__cause__ or e)
                return _error(400, str(e))
            transport.send_json(
                {"type": "session", "session_id": transport.session_id, **self.info}
            )
            try:
                peer.session = await self.factory(transport)
            except Exception:
                log.exception("the agent failed to start for %s", transport.session_id)
                reason = "agent_failed"
                return _error(500, "the agent failed to start; the server log says why")
            peer.watcher = asyncio.get_running_loop().create_task(self._watch(peer))
            released = True  # the watcher owns the call from here
        except Exception:
            log.exception("accepting an offer from %s failed", remote)
            return _error(500, "the call could not be set up; the server log says why")
        finally:
            if not released:
                # Whatever went wrong (or a cancelled request): the slot and the peer go.
                await asyncio.shield(transport.aclose(reason))
                if self.peers.get(transport.session_id) is peer:
                    del self.peers[transport.session_id]
                self._load_changed()
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
        self._load_changed()
        log.info("call %s ended (%s)", transport.session_id, transport.close_reason)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _read_static(name: str) -> bytes:
    return (resources.files("duplex.plugins.webrtc") / "static" / name).read_bytes()
