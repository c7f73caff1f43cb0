"""Server address and API credentials, and the access tokens minted from them.

Secrets stay out of reprs and logs: only the key id is ever shown.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from duplex.agents.errors import ConfigurationError
from livekit import api

ENV_URL = "LIVEKIT_URL"
ENV_API_KEY = "LIVEKIT_API_KEY"
ENV_API_SECRET = "LIVEKIT_API_SECRET"


@dataclass(frozen=True)
class LiveKitCredentials:
    """Where the server is and how to sign for it; ``from_env`` reads the usual LIVEKIT_* names."""

    url: str
    api_key: str | None = None
    api_secret: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(
        cls,
        url: str | None = None,
        api_key: str | None = None,
        api_secret: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> LiveKitCredentials:
        env = os.environ if env is None else env
        url = url or env.get(ENV_URL, "")
        if not url:
            raise ConfigurationError(f"no LiveKit server URL: pass --url or set {ENV_URL}")
        return cls(
            url=url,
            api_key=api_key or env.get(ENV_API_KEY) or None,
            api_secret=api_secret or env.get(ENV_API_SECRET) or None,
        )

    @property
    def has_keys(self) -> bool:
        return bool(self.api_key and self.api_secret)

    def _keys(self) -> tuple[str, str]:
        if not self.api_key or not self.api_secret:
            raise ConfigurationError(
                f"this needs an API key and secret: set {ENV_API_KEY} and {ENV_API_SECRET}"
            )
        return self.api_key, self.api_secret

    def token(
        self,
        *,
        room: str,
        identity: str,
        name: str | None = None,
        kind: str = "agent",
        attributes: Mapping[str, str] | None = None,
        ttl: datetime.timedelta = datetime.timedelta(hours=6),
    ) -> str:
        """A join token for one room; ``kind="agent"`` lets clients tell the bot from people."""
        if not room:
            raise ConfigurationError("a room name is needed to mint a join token")
        if not identity:
            raise ConfigurationError("a participant identity is needed to mint a join token")
        key, secret = self._keys()
        tok = (
            api.AccessToken(key, secret)
            .with_identity(identity)
            .with_kind(kind)  # type: ignore[arg-type]
            .with_ttl(ttl)
            .with_grants(
                api.VideoGrants(
                    room_join=True,
                    room=room,
                    can_publish=True,
                    can_subscribe=True,
                    can_publish_data=True,
                    can_update_own_metadata=True,
                    agent=kind == "agent",
                )
            )
        )
        if name:
            tok = tok.with_name(name)
        if attributes:
            tok = tok.with_attributes(dict(attributes))
        return tok.to_jwt()

    def api(self) -> api.LiveKitAPI:
        """Server API client (rooms, SIP); the caller closes it with ``aclose()``."""
        key, secret = self._keys()
        return api.LiveKitAPI(_http_url(self.url), key, secret)


def _http_url(url: str) -> str:
    """The server API is plain HTTP(S) on the same host as the signalling WebSocket."""
    if url.startswith("wss://"):
        return "https://" + url[len("wss://") :]
    if url.startswith("ws://"):
        return "http://" + url[len("ws://") :]
    return url
