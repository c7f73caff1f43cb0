"""Direct WebRTC: a browser talks to the agent with no media server in between.

`WebRTCTransport` is one peer (aiortc); `PlaygroundServer` does HTTP offer/answer
signaling for many peers and serves the playground page (``agent dev``).
"""

from __future__ import annotations

from .audio import AgentAudioTrack, av_to_frame
from .messages import ProtocolError, event_to_message, parse_client_message
from .server import PlaygroundServer, SessionFactory
from .transport import PeerAudioInput, SignalingError, WebRTCTransport, check_offer

__all__ = [
    "AgentAudioTrack",
    "PeerAudioInput",
    "PlaygroundServer",
    "ProtocolError",
    "SessionFactory",
    "SignalingError",
    "WebRTCTransport",
    "av_to_frame",
    "check_offer",
    "event_to_message",
    "parse_client_message",
]
