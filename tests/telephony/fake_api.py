"""A stand-in for Twilio's and Telnyx's REST APIs, behaving as the services do.

Basic/Bearer auth, 404 (code 20404) and 422 (code 90018) for calls that are
over, and, like the provider, the media stream ends (``stop``, then close)
when a call is hung up or transferred away. For Telnyx, ``answer`` opens the
stream to the ``stream_url`` it was given, as Call Control does.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from .provider import (
    TELNYX_KEY,
    TWILIO_ACCOUNT,
    TWILIO_TOKEN,
    ApiRequest,
    PhoneStream,
)


@dataclass
class FakeProvider:
    """The provider's REST API (and, for Telnyx, its streaming side after ``answer``)."""

    provider: str
    requests: list[ApiRequest] = field(default_factory=list)
    streams: dict[str, PhoneStream] = field(default_factory=dict)
    answered: asyncio.Queue[PhoneStream] = field(default_factory=asyncio.Queue)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> FakeProvider:
        app = web.Application()
        app.add_routes(
            [
                web.post("/2010-04-01/Accounts/{account}/Calls/{call}.json", self._twilio_call),
                web.post("/v2/calls/{call}/actions/{action}", self._telnyx_action),
            ]
        )
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        for stream in list(self.streams.values()):
            await stream.aclose()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- placing calls ----------------------------------------------------------------------
    async def call(
        self, server_url: str, *, signature: str | None = None, encoding: str | None = None
    ) -> PhoneStream:
        """An incoming call: the webhook, then the media stream its answer asks for."""
        if self.provider == "twilio":
            return await self._twilio_incoming(server_url, signature=signature, encoding=encoding)
        return await self._telnyx_incoming(server_url, encoding=encoding)

    async def _twilio_incoming(
        self, server_url: str, *, signature: str | None, encoding: str | None
    ) -> PhoneStream:
        from twilio.request_validator import RequestValidator

        call_sid = "CA" + uuid.uuid4().hex
        form = {
            "CallSid": call_sid,
            "AccountSid": TWILIO_ACCOUNT,
            "From": "+15551230000",
            "To": "+15559870000",
            "CallStatus": "ringing",
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
        }
        url = server_url + "/voice"
        sig = signature or RequestValidator(TWILIO_TOKEN).compute_signature(url, form)
        async with (
            aiohttp.ClientSession() as http,
            http.post(url, data=form, headers={"X-Twilio-Signature": sig}) as resp,
        ):
            text = await resp.text()
            if resp.status != 200:
                raise PermissionError(f"{resp.status}: {text}")
        root = ET.fromstring(text)
        stream = root.find("./Connect/Stream")
        assert stream is not None, text
        params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
        phone = PhoneStream("twilio", call_sid, parameters=params, encoding=encoding)
        self.streams[call_sid] = phone
        await phone.connect(stream.get("url", ""))
        await phone.begin()
        return phone

    async def _telnyx_incoming(self, server_url: str, *, encoding: str | None) -> PhoneStream:
        call_id = "v3:" + uuid.uuid4().hex
        self._pending_encoding = encoding
        event = {
            "data": {
                "event_type": "call.initiated",
                "id": str(uuid.uuid4()),
                "occurred_at": "2026-12-01T12:00:00.000000Z",
                "payload": {
                    "call_control_id": call_id,
                    "call_leg_id": str(uuid.uuid4()),
                    "call_session_id": str(uuid.uuid4()),
                    "connection_id": "1234567890",
                    "direction": "incoming",
                    "from": "+15551230000",
                    "to": "+15559870000",
                    "state": "parked",
                },
                "record_type": "event",
            },
            "meta": {"attempt": 1, "delivered_to": server_url + "/voice"},
        }
        body = json.dumps(event).encode()
        headers = {"Content-Type": "application/json", **self.sign_telnyx(body)}
        async with (
            aiohttp.ClientSession() as http,
            http.post(server_url + "/voice", data=body, headers=headers) as resp,
        ):
            if resp.status != 200:
                raise PermissionError(f"{resp.status}: {await resp.text()}")
        return await asyncio.wait_for(self.answered.get(), 10)

    #: Set by tests that sign Telnyx webhooks: body -> headers.
    telnyx_signer: Any = None
    _pending_encoding: str | None = None

    def sign_telnyx(self, body: bytes) -> dict[str, str]:
        return self.telnyx_signer(body) if self.telnyx_signer else {}

    # --- the REST API -----------------------------------------------------------------------
    async def _twilio_call(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        pair = base64.b64encode(f"{TWILIO_ACCOUNT}:{TWILIO_TOKEN}".encode()).decode()
        expected = f"Basic {pair}"
        if auth != expected or request.match_info["account"] != TWILIO_ACCOUNT:
            return web.json_response(
                {"code": 20003, "message": "Authenticate", "status": 401}, status=401
            )
        call_sid = request.match_info["call"]
        form = dict((await request.post()).items())
        body = {k: str(v) for k, v in form.items()}
        self.requests.append(ApiRequest("twilio", call_sid, "update", body))
        stream = self.streams.get(call_sid)
        if stream is None or stream.closed.is_set():
            return web.json_response(
                {
                    "code": 20404,
                    "message": f"The requested resource /Calls/{call_sid}.json was not found",
                    "status": 404,
                },
                status=404,
            )
        # Completing the call or replacing its TwiML ends the <Connect><Stream>.
        asyncio.get_running_loop().create_task(stream.stop())
        status = "completed" if body.get("Status") == "completed" else "in-progress"
        return web.json_response({"sid": call_sid, "status": status})

    async def _telnyx_action(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TELNYX_KEY}":
            return web.json_response(
                {"errors": [{"code": "10009", "title": "Authentication failed"}]}, status=401
            )
        call_id, action = request.match_info["call"], request.match_info["action"]
        body = await request.json()
        self.requests.append(ApiRequest("telnyx", call_id, action, body))
        stream = self.streams.get(call_id)
        if action == "answer":
            if stream is not None:
                return _telnyx_ended()
            params = {}
            if body.get("client_state"):
                params["client_state"] = body["client_state"]
            phone = PhoneStream(
                "telnyx", call_id, parameters=params, encoding=self._pending_encoding
            )
            self.streams[call_id] = phone

            async def open_stream() -> None:
                await phone.connect(body["stream_url"])
                await phone.begin()
                self.answered.put_nowait(phone)

            asyncio.get_running_loop().create_task(open_stream())
        elif stream is None or stream.closed.is_set():
            return _telnyx_ended()
        elif action in ("hangup", "transfer"):
            asyncio.get_running_loop().create_task(stream.stop())
        return web.json_response({"data": {"result": "ok"}})


def _telnyx_ended() -> web.Response:
    return web.json_response(
        {
            "errors": [
                {
                    "code": "90018",
                    "title": "Call has already ended",
                    "detail": "This call is no longer active and can't receive commands.",
                }
            ]
        },
        status=422,
    )
