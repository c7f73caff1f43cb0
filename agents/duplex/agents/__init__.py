"""duplex.agents — the runtime core: sessions, turns, tools, conversation, the backend seam."""

from .agent import Agent
from .audio import AudioFrame, FrameChunker
from .backend import Backend, BackendSession, Capabilities, ResponseHandle
from .conversation import (
    AudioPart,
    Conversation,
    FunctionCall,
    FunctionCallOutput,
    Message,
    TextPart,
)
from .errors import (
    AudioFormatError,
    BackendErrorException,
    ConfigurationError,
    DuplexError,
    ResponseActiveError,
    SessionClosedError,
    ToolArgumentsError,
    ToolDefinitionError,
    ToolError,
)
from .events import (
    AgentInterrupted,
    AgentStateChanged,
    AgentTranscribed,
    ConversationItemAdded,
    MetricsCollected,
    Reconnected,
    Reconnecting,
    SessionClosed,
    SessionError,
    ToolCalled,
    ToolExecuted,
    TurnMetrics,
    UserIdle,
    UserStateChanged,
    UserTranscribed,
)
from .output_buffer import BufferedAudioOutput, OutputBuffer
from .resample import Resampler
from .session import AgentSession
from .tools import FunctionTool, function_tool
from .transport import AudioInput, AudioOutput, QueuedAudioInput, Transport
from .vad import VAD, EndOfTurnModel, EnergyVAD, TurnDetector, TurnOptions, VADStream
from .version import __version__

__all__ = [
    "VAD",
    "Agent",
    "AgentInterrupted",
    "AgentSession",
    "AgentStateChanged",
    "AgentTranscribed",
    "AudioFormatError",
    "AudioFrame",
    "AudioInput",
    "AudioOutput",
    "AudioPart",
    "Backend",
    "BackendErrorException",
    "BackendSession",
    "BufferedAudioOutput",
    "Capabilities",
    "ConfigurationError",
    "Conversation",
    "ConversationItemAdded",
    "DuplexError",
    "EndOfTurnModel",
    "EnergyVAD",
    "FrameChunker",
    "FunctionCall",
    "FunctionCallOutput",
    "FunctionTool",
    "Message",
    "MetricsCollected",
    "OutputBuffer",
    "QueuedAudioInput",
    "Reconnected",
    "Reconnecting",
    "Resampler",
    "ResponseActiveError",
    "ResponseHandle",
    "SessionClosed",
    "SessionClosedError",
    "SessionError",
    "TextPart",
    "ToolArgumentsError",
    "ToolCalled",
    "ToolDefinitionError",
    "ToolError",
    "ToolExecuted",
    "Transport",
    "TurnDetector",
    "TurnMetrics",
    "TurnOptions",
    "UserIdle",
    "UserStateChanged",
    "UserTranscribed",
    "VADStream",
    "__version__",
    "function_tool",
]
