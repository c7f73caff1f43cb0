"""Hanging up and transferring a provider's call through its REST API.

The media stream carries only audio; ending or moving the call is a REST request
to the provider. Base URLs are parameters so tests (and regional edges) can
point them elsewhere. Credentials are sent as headers and never logged.
"""

from __future__ import annotations

import base64
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import aiohttp

from duplex.agents.errors import ConfigurationError, DuplexError

__all__ = [
    "CallControl",
    "CallControlError",
    "TelnyxCallControl",
    "TwilioCallControl",
    "dial_twiml",
]

log = logging.getLogger(__name__)

TWILIO_API = "https://api.twilio.com"
TELNYX_API = "https://api.telnyx.com"


class CallControlError(DuplexError):
    """The provider refused a call-control request; ``status`` is its HTTP status."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class CallControl(ABC):
    """One provider account's call control, shared by every call of a server."""

    def __init__(self, base_url: str, *, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._http: aiohttp.ClientSession | None = None

    @abstractmethod
    async def hang_up(self, call_id: str) -> None:
        """End the call; a call that is already over is not an error."""

    @abstractmethod
    async def transfer(self, call_id: str, target: str) -> None:
        """Move the caller to ``tel:+1555...`` or ``sip:user@host``."""

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _post(
        self,
        path: str,
        *,
        data: Mapping[str, str] | None = None,
        json_body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=self._timeout)
        url = self.base_url + path
        try:
            async with self._http.post(url, data=data, json=json_body, headers=headers) as resp:
                text = await resp.text()
                try:
                    body: Any = json.loads(text) if text else None
                except json.JSONDecodeError:
                    body = text
                return resp.status, body
        except (aiohttp.ClientError, TimeoutError) as e:
            raise CallControlError(f"could not reach {self.base_url}: {e}") from e


def _twilio_error(body: Any) -> str:
    if isinstance(body, Mapping):
        return f"{body.get('message')} (code {body.get('code')})"
    return str(body)[:200]


def dial_twiml(target: str) -> str:
    """TwiML that dials ``target`` (``tel:`` number or ``sip:`` URI)."""
    if target.startswith("sip:") or target.startswith("sips:"):
        noun = f"<Sip>{escape(target)}</Sip>"
    else:
        number = target.removeprefix("tel:")
        noun = f"<Number>{escape(number)}</Number>"
    return f"<Response><Dial>{noun}</Dial></Response>"


class TwilioCallControl(CallControl):
    """Twilio's Calls resource: ``Status=completed`` hangs up, new ``Twiml`` transfers."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        base_url: str = TWILIO_API,
        api_key: tuple[str, str] | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        if not account_sid or not (auth_token or api_key):
            raise ConfigurationError(
                "Twilio call control needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"
            )
        super().__init__(base_url, timeout_s=timeout_s)
        self.account_sid = account_sid
        user, secret = api_key or (account_sid, auth_token)
        token = base64.b64encode(f"{user}:{secret}".encode()).decode("ascii")
        self._headers = {"Authorization": f"Basic {token}"}

    def _path(self, call_sid: str) -> str:
        return f"/2010-04-01/Accounts/{self.account_sid}/Calls/{call_sid}.json"

    async def _update(self, call_sid: str, form: dict[str, str]) -> int:
        status, body = await self._post(self._path(call_sid), data=form, headers=self._headers)
        if status >= 400 and status != 404:
            raise CallControlError(
                f"Twilio refused the call update: {_twilio_error(body)}", status=status
            )
        return status

    async def hang_up(self, call_id: str) -> None:
        if await self._update(call_id, {"Status": "completed"}) == 404:
            log.info("call %s was already over", call_id)

    async def transfer(self, call_id: str, target: str) -> None:
        if await self._update(call_id, {"Twiml": dial_twiml(target)}) == 404:
            raise CallControlError("the call is over; nothing to transfer", status=404)


class TelnyxCallControl(CallControl):
    """Telnyx Call Control v2 actions (``answer``, ``hangup``, ``transfer``)."""

    #: Telnyx's error code for a command on a call that has ended.
    CALL_ENDED = "90018"

    def __init__(
        self, api_key: str, *, base_url: str = TELNYX_API, timeout_s: float = 10.0
    ) -> None:
        if not api_key:
            raise ConfigurationError("Telnyx call control needs TELNYX_API_KEY")
        super().__init__(base_url, timeout_s=timeout_s)
        self._headers = {"Authorization": f"Bearer {api_key}"}

    async def _action(self, call_id: str, action: str, body: Mapping[str, Any]) -> bool:
        """True when done; False when the call had already ended."""
        status, resp = await self._post(
            f"/v2/calls/{call_id}/actions/{action}", json_body=body, headers=self._headers
        )
        if status < 400:
            return True
        errors = resp.get("errors") if isinstance(resp, Mapping) else None
        codes = {str(e.get("code")) for e in errors or () if isinstance(e, Mapping)}
        if status == 422 and self.CALL_ENDED in codes:
            return False
        detail = "; ".join(
            str(e.get("detail") or e.get("title")) for e in errors or () if isinstance(e, Mapping)
        )
        raise CallControlError(
            f"Telnyx refused {action}: {detail or str(resp)[:200]}", status=status
        )

    async def answer(self, call_id: str, stream_url: str, **options: Any) -> None:
        """Answer with a bidirectional RTP media stream to ``stream_url``."""
        body = {
            "stream_url": stream_url,
            "stream_track": "inbound_track",
            "stream_bidirectional_mode": "rtp",
            "stream_bidirectional_codec": "PCMU",
            **options,
        }
        await self._action(call_id, "answer", body)

    async def hang_up(self, call_id: str) -> None:
        if not await self._action(call_id, "hangup", {}):
            log.info("call %s was already over", call_id)

    async def transfer(self, call_id: str, target: str) -> None:
        to = target.removeprefix("tel:")
        if not await self._action(call_id, "transfer", {"to": to}):
            raise CallControlError("the call is over; nothing to transfer", status=422)


def stream_twiml(stream_url: str, parameters: Mapping[str, str]) -> str:
    """The answer to Twilio's voice webhook: connect the call to our media WebSocket."""
    params = "".join(
        f"<Parameter name={quoteattr(k)} value={quoteattr(v)}/>" for k, v in parameters.items()
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Response><Connect><Stream url={quoteattr(stream_url)}>{params}</Stream></Connect>"
        "</Response>"
    )
