"""LiveKit: the agent as a room participant (`RoomTransport`), phone callers, `agent run/join`.

Needs the ``livekit`` extra: ``pip install 'duplex-agents[livekit]'``.
"""

from .audio_io import RoomAudioInput, RoomAudioOutput
from .auth import LiveKitCredentials
from .participants import DEFAULT_KINDS, ParticipantFilter, ParticipantTracker, parse_kinds
from .room import RoomConnectError, RoomTransport
from .sip import DtmfBuffer, DtmfDigit, SipCallInfo, SipControls, SipTools, is_sip, sip_tools
from .text_io import (
    ATTR_AGENT_STATE,
    ATTR_FINAL,
    ATTR_SEGMENT_ID,
    ATTR_TRACK_ID,
    TOPIC_CHAT,
    TOPIC_TRANSCRIPTION,
)

__all__ = [
    "ATTR_AGENT_STATE",
    "ATTR_FINAL",
    "ATTR_SEGMENT_ID",
    "ATTR_TRACK_ID",
    "DEFAULT_KINDS",
    "TOPIC_CHAT",
    "TOPIC_TRANSCRIPTION",
    "DtmfBuffer",
    "DtmfDigit",
    "LiveKitCredentials",
    "ParticipantFilter",
    "ParticipantTracker",
    "RoomAudioInput",
    "RoomAudioOutput",
    "RoomConnectError",
    "RoomTransport",
    "SipCallInfo",
    "SipControls",
    "SipTools",
    "is_sip",
    "parse_kinds",
    "sip_tools",
]
