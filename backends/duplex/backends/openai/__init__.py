"""OpenAI Realtime backend: GA and beta ("realtime=v1") dialects, Azure, compatible servers.

See docs/backends/openai.md for the event table and how a session behaves.
"""

from .backend import OpenAIRealtime
from .metrics import ResponseMetrics
from .options import (
    InputTranscription,
    ReconnectPolicy,
    SemanticVAD,
    ServerVAD,
)
from .responses import OpenAIResponseHandle
from .session import OpenAIRealtimeSession

__all__ = [
    "InputTranscription",
    "OpenAIRealtime",
    "OpenAIRealtimeSession",
    "OpenAIResponseHandle",
    "ReconnectPolicy",
    "ResponseMetrics",
    "SemanticVAD",
    "ServerVAD",
]
