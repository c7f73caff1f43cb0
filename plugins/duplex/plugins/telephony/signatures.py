"""Checking that a webhook really comes from the provider.

Twilio signs each request with HMAC-SHA1 of the full URL followed by the POST
parameters sorted by name (name then value, no separators), keyed with the
account's auth token, in ``X-Twilio-Signature``. Telnyx signs
``{timestamp}|{body}`` with Ed25519 (``telnyx-signature-ed25519``,
``telnyx-timestamp``); the account's public key verifies it.

`StreamToken` protects the media WebSocket itself: the webhook answer carries
an HMAC of the call id as a stream parameter, which the stream's ``start``
frame must bring back, so only calls our webhook answered get a session.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping

__all__ = [
    "StreamToken",
    "TelnyxSignatureError",
    "telnyx_signature_valid",
    "twilio_signature",
    "twilio_signature_valid",
]


def twilio_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]] = ()) -> str:
    """The ``X-Twilio-Signature`` Twilio sends for a request to ``url`` with form ``params``."""
    data = url + "".join(k + v for k, v in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def twilio_signature_valid(
    auth_token: str, url: str, params: Iterable[tuple[str, str]], signature: str | None
) -> bool:
    if not signature:
        return False
    expected = twilio_signature(auth_token, url, params)
    return hmac.compare_digest(expected, signature)


class TelnyxSignatureError(ValueError):
    """The public key is not a base64 Ed25519 key."""


def telnyx_signature_valid(
    public_key_b64: str,
    body: bytes,
    signature_b64: str | None,
    timestamp: str | None,
    *,
    tolerance_s: float = 300.0,
    now: float | None = None,
) -> bool:
    """Ed25519 over ``timestamp|body``; stale timestamps (replays) are refused."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if not signature_b64 or not timestamp:
        return False
    try:
        sent_at = float(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent_at) > tolerance_s:
        return False
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64))
    except (binascii.Error, ValueError) as e:
        raise TelnyxSignatureError(f"TELNYX_PUBLIC_KEY is not a base64 Ed25519 key: {e}") from e
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        key.verify(signature, timestamp.encode() + b"|" + body)
    except (binascii.Error, ValueError, InvalidSignature):
        return False
    return True


class StreamToken:
    """Binds a media stream to a call our webhook answered."""

    PARAMETER = "duplex_token"

    def __init__(self, key: bytes) -> None:
        self._key = key

    def for_call(self, call_id: str) -> str:
        return hmac.new(self._key, call_id.encode(), hashlib.sha256).hexdigest()[:32]

    def valid(self, call_id: str, parameters: Mapping[str, str]) -> bool:
        token = parameters.get(self.PARAMETER)
        return bool(token) and hmac.compare_digest(self.for_call(call_id), str(token))
