"""The phone server: the provider's webhook and media WebSocket, one session per call.

``POST /voice`` answers the provider's incoming-call webhook: TwiML
``<Connect><Stream>`` for Twilio; for Telnyx (Call Control) the ``call.initiated``
event is answered through the API with a bidirectional RTP stream. Both point
the provider at ``GET /media`` (WebSocket), where each connection is one call.
With a secret configured, webhooks must carry the provider's signature (else
403) and a stream must bring back the token its webhook answer gave it.

As one of several workers on a port (``agent phone --workers N``) the webhook and its
stream may reach different workers: they share the stream-token key. Draining, a
worker answers new calls' webhooks 503 but still takes the streams of calls answered.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import WebSocketError, WSCloseCode, WSMsgType, web

from duplex.agents.serving import AppServer, draining_response

from .control import CallControl, TelnyxCallControl, stream_twiml
from .dialects import DIALECTS, MediaStreamProtocolError, dialect_for
from .media_stream import MediaStreamTransport
from .signatures import StreamToken, telnyx_signature_valid, twilio_signature_valid

__all__ = ["PhoneCall", "PhoneServer", "SessionFactory"]

log = logging.getLogger(__name__)


class ClosableSession(Protocol):
    async def aclose(self) -> None: ...


#: Builds and starts the agent's session once a stream's ``start`` frame arrived.
SessionFactory = Callable[[MediaStreamTransport], Awaitable[ClosableSession]]


@dataclass(eq=False)
class PhoneCall:
    transport: MediaStreamTransport
    session: ClosableSession | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)


class PhoneServer(AppServer):
    """Serves one provider's calls from one process; each call gets a transport and a session."""

    def __init__(
        self,
        factory: SessionFactory,
        *,
        provider: str = "twilio",
        host: str = "127.0.0.1",
        port: int = 8765,
        public_url: str | None = None,
        control: CallControl | None = None,
        twilio_auth_token: str | None = None,
        telnyx_public_key: str | None = None,
        stream_key: bytes | None = None,
        max_calls: int = 32,
        max_frame_bytes: int = 64 * 1024,
        start_timeout_s: float = 10.0,
        transport_options: dict[str, Any] | None = None,
        reuse_port: bool = False,
        on_load: Callable[[int], None] | None = None,
        status: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        """As a worker: ``reuse_port`` shares the port with siblings, ``on_load(calls)`` is
        told each change of the calls in progress, ``status()`` adds to ``/health``."""
        if provider not in DIALECTS:
            raise ValueError(f"unknown provider {provider!r} (one of {', '.join(DIALECTS)})")
        self.factory = factory
        self.provider = provider
        #: ``https://example.com`` as the provider reaches us; signatures are over this URL.
        self.public_url = public_url.rstrip("/") if public_url else None
        self.control = control
        self._twilio_token = twilio_auth_token
        self._telnyx_key = telnyx_public_key
        self._tokens = StreamToken(stream_key or secrets.token_bytes(32))
        self.max_calls = max_calls
        self.max_frame_bytes = max_frame_bytes
        self.start_timeout_s = start_timeout_s
        self.transport_options = dict(transport_options or {})
        self.calls: dict[str, PhoneCall] = {}
        #: Every call's transport ever served (tests and metrics read the finished ones).
        self.history: list[MediaStreamTransport] = []
        app = web.Application(client_max_size=max_frame_bytes)
        app.add_routes(
            [
                web.post("/voice", self._voice),
                web.get("/media", self._media),
                web.get("/health", self._health),
            ]
        )
        super().__init__(app, host, port, reuse_port=reuse_port, on_load=on_load)
        self.status = status
        self._sockets: set[web.WebSocketResponse] = set()

    @property
    def secured(self) -> bool:
        return bool(self._twilio_token if self.provider == "twilio" else self._telnyx_key)

    async def aclose(self) -> None:
        """Hang up every stream (the provider then ends or continues the call), stop serving."""
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1001, message=b"server shutting down")
        calls = list(self.calls.values())
        await asyncio.gather(*(c.transport.aclose("server_closed") for c in calls))
        for call in calls:
            await asyncio.gather(*call.tasks, return_exceptions=True)
        if self.control is not None:
            await self.control.aclose()
        await self.stop_serving()

    # --- webhooks -----------------------------------------------------------------------------
    def _public(self, request: web.Request) -> str:
        if self.public_url:
            return self.public_url + request.path_qs
        return str(request.url)

    def _stream_url(self, request: web.Request) -> str:
        base = self.public_url or f"{request.scheme}://{request.host}"
        if base.startswith("https://"):
            return "wss://" + base.removeprefix("https://") + "/media"
        return "ws://" + base.removeprefix("http://") + "/media"

    async def _voice(self, request: web.Request) -> web.Response:
        if self.draining and self.provider == "twilio":
            return draining_response()
        if self.provider == "twilio":
            return await self._twilio_voice(request)
        return await self._telnyx_event(request)

    async def _twilio_voice(self, request: web.Request) -> web.Response:
        form = await request.post()
        params = [(k, str(v)) for k, v in form.items()]
        if self._twilio_token is not None:
            signature = request.headers.get("X-Twilio-Signature")
            if not twilio_signature_valid(
                self._twilio_token, self._public(request), params, signature
            ):
                log.warning("refused a Twilio webhook with a bad signature")
                return web.Response(status=403, text="invalid signature")
        call_sid = str(form.get("CallSid", ""))
        if not call_sid:
            return web.Response(status=400, text="CallSid missing")
        parameters = {"call_sid": call_sid}
        if self.secured:
            parameters[StreamToken.PARAMETER] = self._tokens.for_call(call_sid)
        twiml = stream_twiml(self._stream_url(request), parameters)
        return web.Response(text=twiml, content_type="text/xml")

    async def _telnyx_event(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self._telnyx_key is not None and not telnyx_signature_valid(
            self._telnyx_key,
            body,
            request.headers.get("telnyx-signature-ed25519"),
            request.headers.get("telnyx-timestamp"),
        ):
            log.warning("refused a Telnyx webhook with a bad signature")
            return web.Response(status=403, text="invalid signature")
        try:
            event = json.loads(body)
            data = event["data"]
            kind = data["event_type"]
            payload = data["payload"]
        except (ValueError, KeyError, TypeError):
            return web.Response(status=400, text="not a Telnyx webhook event")
        if kind != "call.initiated" or payload.get("direction", "incoming") != "incoming":
            return web.json_response({"ok": True})  # other events need nothing from us
        if self.draining:
            return draining_response()
        call_id = payload.get("call_control_id")
        if not isinstance(call_id, str) or not isinstance(self.control, TelnyxCallControl):
            return web.Response(status=400 if self.control else 503, text="cannot answer")
        state: dict[str, str] = {"call_control_id": call_id}
        if self.secured:
            state[StreamToken.PARAMETER] = self._tokens.for_call(call_id)
        client_state = base64.b64encode(json.dumps(state).encode()).decode()
        await self.control.answer(call_id, self._stream_url(request), client_state=client_state)
        return web.json_response({"ok": True})

    async def _health(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = {"status": "draining" if self.draining else "ok"}
        body["calls"] = len(self.calls)
        if self.status is not None:
            body.update(self.status())
        return web.json_response(body)

    # --- media streams ------------------------------------------------------------------------
    async def _media(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=self.max_frame_bytes)
        await ws.prepare(request)
        if len(self.calls) >= self.max_calls:
            await ws.close(code=1013, message=b"too many calls")
            return ws
        self._sockets.add(ws)
        transport = MediaStreamTransport(
            dialect_for(self.provider),
            ws.send_str,
            ws.close,
            control=self.control,
            **self.transport_options,
        )
        self.history.append(transport)
        call = PhoneCall(transport)
        key = f"ws-{id(ws):x}"
        self.calls[key] = call
        self.load.changed(len(self.calls))
        loop = asyncio.get_running_loop()
        call.tasks.add(loop.create_task(self._answer(call)))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await transport.handle_text(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    transport.handle_binary(msg.data)
                if transport.closed.is_set():
                    break
            error = ws.exception()
            too_big = ws.close_code == WSCloseCode.MESSAGE_TOO_BIG or (
                isinstance(error, WebSocketError) and error.code == WSCloseCode.MESSAGE_TOO_BIG
            )
            if error is not None or too_big:
                transport.errors.append(
                    MediaStreamProtocolError(
                        f"frame larger than {self.max_frame_bytes} bytes"
                        if too_big
                        else f"the stream broke: {error}",
                        code="frame_too_large" if too_big else "socket_error",
                    )
                )
        finally:
            await transport.aclose(transport.close_reason or "stream_closed")
            await asyncio.gather(*call.tasks, return_exceptions=True)
            self._sockets.discard(ws)
            self.calls.pop(key, None)
            self.load.changed(len(self.calls))
        return ws

    async def _answer(self, call: PhoneCall) -> None:
        """Wait for ``start``, check it belongs to a call we answered, run the session."""
        transport = call.transport
        started = asyncio.ensure_future(transport.started.wait())
        closed = asyncio.ensure_future(transport.closed.wait())
        try:
            await asyncio.wait(
                {started, closed}, timeout=self.start_timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            started.cancel()
            closed.cancel()
        info = transport.call
        if info is None:
            await transport.aclose("no_start" if not transport.closed.is_set() else "closed")
            return
        if self.secured and not self._tokens.valid(info.call_id, info.custom_parameters):
            log.warning("refused a stream for %s without a valid token", info.call_id)
            transport.errors.append(MediaStreamProtocolError("bad stream token", code="forbidden"))
            await transport.aclose("forbidden")
            return
        try:
            call.session = await self.factory(transport)
        except Exception:
            log.exception("the agent failed to start for call %s", info.call_id)
            await transport.aclose("agent_failed")
            return
        log.info("call %s started (%d live)", info.call_id, len(self.calls))
        await transport.closed.wait()
        try:
            await call.session.aclose()
        except Exception:
            log.exception("closing the session of %s failed", info.call_id)
        log.info("call %s ended (%s)", info.call_id, transport.close_reason)
