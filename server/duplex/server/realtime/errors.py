"""Errors the server answers with: the service's ``error`` event fields, raised where found."""

from __future__ import annotations

from typing import Any


class ProtocolError(Exception):
    """A client event the server refuses; becomes one ``error`` event, the session goes on.

    ``code`` values are the service's (``invalid_value``, ``unknown_parameter``,
    ``conversation_already_has_active_response``, ...), so client code written for
    OpenAI's service handles ours unchanged.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        param: str | None = None,
        type: str = "invalid_request_error",
        event_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.type = type
        self.event_id = event_id

    def payload(self) -> dict[str, Any]:
        err: dict[str, Any] = {"type": self.type, "code": self.code, "message": self.message}
        if self.param is not None:
            err["param"] = self.param
        if self.event_id is not None:
            err["event_id"] = self.event_id
        return err


def unsupported(what: str, *, param: str | None = None) -> ProtocolError:
    """What the self-hosted cascade cannot do (images, MCP, WebRTC/SIP), said plainly."""
    return ProtocolError(
        "unsupported_feature",
        f"{what} is not supported by this server (duplex realtime-server over a cascade)",
        param=param,
    )
