"""Each provider's media-stream messages, one small class per provider.

Twilio Media Streams and Telnyx media streaming share a shape (JSON text
frames: connected, start, media, dtmf, mark, stop in; media, mark, clear out)
but differ in names (``streamSid`` vs ``stream_id``, ``customParameters`` vs
``custom_parameters``) and in the codec names they use. A dialect turns one
provider's frames into the typed events below and builds its outgoing frames.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from duplex.agents.errors import DuplexError
from duplex.agents.g711 import G711Law

__all__ = [
    "DIALECTS",
    "Dialect",
    "DtmfReceived",
    "InboundEvent",
    "MarkEchoed",
    "MediaReceived",
    "MediaStreamProtocolError",
    "ProviderError",
    "StreamConnected",
    "StreamStarted",
    "StreamStopped",
    "TelnyxDialect",
    "TwilioDialect",
    "dialect_for",
]

Provider = Literal["twilio", "telnyx"]


class MediaStreamProtocolError(DuplexError, ValueError):
    """A frame the provider should never send; ``code`` says which rule it broke."""

    def __init__(self, message: str, *, code: str = "bad_frame", fatal: bool = False) -> None:
        super().__init__(message)
        self.code = code
        #: The stream cannot go on (e.g. an encoding we cannot play); the call is ended.
        self.fatal = fatal


@dataclass(frozen=True)
class StreamConnected:
    protocol: str | None
    version: str | None


@dataclass(frozen=True)
class StreamStarted:
    """The call the stream belongs to, and its audio format."""

    stream_id: str
    call_id: str
    law: G711Law
    sample_rate: int
    account_id: str | None = None
    caller: str | None = None
    called: str | None = None
    custom_parameters: Mapping[str, str] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MediaReceived:
    payload: bytes
    track: str | None
    timestamp_ms: int | None


@dataclass(frozen=True)
class MarkEchoed:
    name: str


@dataclass(frozen=True)
class DtmfReceived:
    digit: str


@dataclass(frozen=True)
class StreamStopped:
    reason: str | None = None


@dataclass(frozen=True)
class ProviderError:
    message: str
    code: str | None = None


InboundEvent = (
    StreamConnected
    | StreamStarted
    | MediaReceived
    | MarkEchoed
    | DtmfReceived
    | StreamStopped
    | ProviderError
)


def _obj(msg: Mapping[str, Any], key: str, event: str) -> Mapping[str, Any]:
    value = msg.get(key)
    if not isinstance(value, Mapping):
        raise MediaStreamProtocolError(f"a {event!r} frame needs an object in {key!r}")
    return value


def _str(obj: Mapping[str, Any], key: str, event: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise MediaStreamProtocolError(f"a {event!r} frame needs a string {key!r}")
    return value


def _opt_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _params(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def _client_state(value: Any) -> dict[str, str]:
    """Telnyx echoes the answer's base64 ``client_state``; ours is a JSON object of strings."""
    if not isinstance(value, str) or not value:
        return {}
    try:
        decoded = json.loads(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError):
        return {}
    return _params(decoded)


class Dialect:
    """The common frame grammar; subclasses name the provider's fields."""

    provider: ClassVar[Provider]
    #: Key of the stream id at the top level of every frame.
    stream_key: ClassVar[str]
    #: Provider encoding names -> G.711 law.
    encodings: ClassVar[Mapping[str, G711Law]]

    def __init__(self) -> None:
        self.stream_id: str | None = None

    # inbound ----------------------------------------------------------------------------
    def parse(self, msg: Any) -> InboundEvent | None:
        """One decoded JSON frame -> an event; None for frames with nothing to act on."""
        if not isinstance(msg, Mapping):
            raise MediaStreamProtocolError("a frame must be a JSON object")
        event = msg.get("event")
        if not isinstance(event, str):
            raise MediaStreamProtocolError("a frame needs a string 'event'")
        if event == "connected":
            return StreamConnected(msg.get("protocol"), msg.get("version"))
        if event == "start":
            started = self.parse_start(msg)
            self.stream_id = started.stream_id
            return started
        if event == "media":
            media = _obj(msg, "media", event)
            track = media.get("track")
            if isinstance(track, str) and track not in ("inbound", "inbound_track"):
                return None  # the agent's own audio, when both tracks are streamed
            try:
                payload = base64.b64decode(_str(media, "payload", event), validate=True)
            except (binascii.Error, ValueError) as e:
                raise MediaStreamProtocolError(f"media payload is not base64: {e}") from e
            if not payload:
                return None
            return MediaReceived(payload, track, _opt_int(media.get("timestamp")))
        if event == "mark":
            return MarkEchoed(_str(_obj(msg, "mark", event), "name", event))
        if event == "dtmf":
            return DtmfReceived(_str(_obj(msg, "dtmf", event), "digit", event))
        if event == "stop":
            return StreamStopped(self.stop_reason(msg))
        if event == "error":
            return self.parse_error(msg)
        raise MediaStreamProtocolError(f"unknown event {event!r}", code="unknown_event")

    def parse_start(self, msg: Mapping[str, Any]) -> StreamStarted:
        raise NotImplementedError

    def stop_reason(self, msg: Mapping[str, Any]) -> str | None:
        return None

    def parse_error(self, msg: Mapping[str, Any]) -> ProviderError:
        return ProviderError(str(msg.get("error") or msg))

    def law_of(self, encoding: Any) -> G711Law:
        law = self.encodings.get(str(encoding))
        if law is None:
            raise MediaStreamProtocolError(
                f"{self.provider} stream encoding {encoding!r} is not supported "
                f"(use one of {', '.join(self.encodings)})",
                code="unsupported_encoding",
                fatal=True,
            )
        return law

    # outbound ---------------------------------------------------------------------------
    def media(self, payload: bytes) -> dict[str, Any]:
        return self._out("media", media={"payload": base64.b64encode(payload).decode("ascii")})

    def mark(self, name: str) -> dict[str, Any]:
        return self._out("mark", mark={"name": name})

    def clear(self) -> dict[str, Any]:
        return self._out("clear")

    def _out(self, event: str, **body: Any) -> dict[str, Any]:
        return {"event": event, **body}


class TwilioDialect(Dialect):
    """Twilio Media Streams (``<Connect><Stream>``): camelCase, ``streamSid`` on every frame."""

    provider = "twilio"
    stream_key = "streamSid"
    encodings: ClassVar[Mapping[str, G711Law]] = {"audio/x-mulaw": "ulaw"}

    def parse_start(self, msg: Mapping[str, Any]) -> StreamStarted:
        start = _obj(msg, "start", "start")
        fmt = start.get("mediaFormat") or {}
        if not isinstance(fmt, Mapping):
            raise MediaStreamProtocolError("start.mediaFormat must be an object")
        rate = _opt_int(fmt.get("sampleRate")) or 8000
        if rate != 8000:
            raise MediaStreamProtocolError(
                f"Twilio streams are 8000 Hz, got {rate}", code="unsupported_encoding", fatal=True
            )
        return StreamStarted(
            stream_id=_str(start, "streamSid", "start"),
            call_id=_str(start, "callSid", "start"),
            law=self.law_of(fmt.get("encoding", "audio/x-mulaw")),
            sample_rate=rate,
            account_id=start.get("accountSid"),
            custom_parameters=_params(start.get("customParameters")),
            raw=dict(start),
        )

    def stop_reason(self, msg: Mapping[str, Any]) -> str | None:
        return "stop"

    def _out(self, event: str, **body: Any) -> dict[str, Any]:
        return {"event": event, "streamSid": self.stream_id, **body}


class TelnyxDialect(Dialect):
    """Telnyx media streaming, bidirectional RTP mode: snake_case, ``stream_id``."""

    provider = "telnyx"
    stream_key = "stream_id"
    encodings: ClassVar[Mapping[str, G711Law]] = {
        "PCMU": "ulaw",
        "PCMA": "alaw",
        "audio/x-mulaw": "ulaw",
        "audio/x-alaw": "alaw",
    }

    def parse_start(self, msg: Mapping[str, Any]) -> StreamStarted:
        start = _obj(msg, "start", "start")
        fmt = start.get("media_format") or {}
        if not isinstance(fmt, Mapping):
            raise MediaStreamProtocolError("start.media_format must be an object")
        rate = _opt_int(fmt.get("sample_rate")) or 8000
        if rate != 8000:
            raise MediaStreamProtocolError(
                f"G.711 streams are 8000 Hz, got {rate}", code="unsupported_encoding", fatal=True
            )
        stream_id = msg.get("stream_id") or start.get("stream_id")
        if not isinstance(stream_id, str) or not stream_id:
            raise MediaStreamProtocolError("a 'start' frame needs a string 'stream_id'")
        return StreamStarted(
            stream_id=stream_id,
            call_id=_str(start, "call_control_id", "start"),
            law=self.law_of(fmt.get("encoding", "PCMU")),
            sample_rate=rate,
            caller=start.get("from"),
            called=start.get("to"),
            custom_parameters={
                **_client_state(start.get("client_state")),
                **_params(start.get("custom_parameters")),
            },
            raw=dict(start),
        )

    def parse_error(self, msg: Mapping[str, Any]) -> ProviderError:
        payload = msg.get("payload")
        if isinstance(payload, Mapping):
            detail = payload.get("detail") or payload.get("title") or payload
            return ProviderError(str(detail), str(payload.get("code", "")) or None)
        return ProviderError(str(msg))


DIALECTS: dict[str, type[Dialect]] = {"twilio": TwilioDialect, "telnyx": TelnyxDialect}


def dialect_for(provider: str) -> Dialect:
    try:
        return DIALECTS[provider]()
    except KeyError:
        raise MediaStreamProtocolError(
            f"unknown provider {provider!r} (one of {', '.join(DIALECTS)})", code="config"
        ) from None
