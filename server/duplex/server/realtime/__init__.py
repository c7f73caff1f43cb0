"""An OpenAI-Realtime-compatible server over duplex's cascade (``agent realtime-server``).

Any realtime client (the openai SDK, livekit-agents' and pipecat's OpenAI realtime
plugins, duplex's own `OpenAIRealtime`) gets a self-hosted voice model by changing
only ``base_url``::

    from duplex.backends.cascade import offline_backend
    from duplex.server.realtime import RealtimeServer, ServerOptions

    server = await RealtimeServer(offline_backend(), ServerOptions(port=8000)).start()
    # AsyncOpenAI(base_url=server.url, api_key="-").realtime.connect(model="duplex-cascade")

See docs/server/realtime.md for what is and is not supported.
"""

from __future__ import annotations

from .app import RealtimeServer, ServerOptions, default_vad, serve
from .backends import cascade_backend
from .connection import ConnectionOptions
from .errors import ProtocolError
from .protocol import parse as parse_client_event

__all__ = [
    "ConnectionOptions",
    "ProtocolError",
    "RealtimeServer",
    "ServerOptions",
    "cascade_backend",
    "default_vad",
    "parse_client_event",
    "serve",
]
