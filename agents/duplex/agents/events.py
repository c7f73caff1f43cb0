"""Events a session reports to application code (and transports forward to the far side)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

from .conversation import FunctionCall, FunctionCallOutput, Item

AgentState = Literal["initializing", "listening", "thinking", "speaking", "closed"]
UserState = Literal["listening", "speaking"]


@dataclass(frozen=True)
class AgentStateChanged:
    old: AgentState
    new: AgentState


@dataclass(frozen=True)
class UserStateChanged:
    old: UserState
    new: UserState


@dataclass(frozen=True)
class UserTranscribed:
    item_id: str
    text: str
    final: bool


@dataclass(frozen=True)
class AgentTranscribed:
    """The agent's words: the text so far while streaming, then the final (maybe cut) text."""

    item_id: str
    text: str
    final: bool


@dataclass(frozen=True)
class ConversationItemAdded:
    item: Item


@dataclass(frozen=True)
class ToolCalled:
    """The model asked for a tool; it is running now."""

    call: FunctionCall


@dataclass(frozen=True)
class ToolExecuted:
    call: FunctionCall
    output: FunctionCallOutput
    duration_s: float


@dataclass(frozen=True)
class TurnMetrics:
    """One reply. Latencies in milliseconds; None where the turn had no such moment."""

    response_id: str
    #: Caller's last speech (end of speech) -> first reply audio handed to the transport.
    end_to_end_ms: float | None = None
    #: Reply requested -> first audio from the backend.
    backend_ttfa_ms: float | None = None
    #: Caller's speech onset -> playout stopped, when this reply was interrupted.
    interruption_ms: float | None = None
    played_ms: float = 0.0
    interrupted: bool = False
    status: str = "completed"
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True)
class MetricsCollected:
    metrics: TurnMetrics


@dataclass(frozen=True)
class AgentInterrupted:
    item_id: str | None
    played_ms: float
    #: Speech onset -> playout stopped (or paused).
    latency_ms: float
    #: True when it was a false interruption and the reply resumed where it paused
    #: (nothing was cut); False when the reply was cut to ``played_ms`` of ``item_id``.
    resumed: bool = False


@dataclass(frozen=True)
class AgentHandoff:
    """The call passed from one agent to another (names, for UIs and logs)."""

    from_agent: str
    to_agent: str


@dataclass(frozen=True)
class UserIdle:
    """The caller said nothing for ``idle_s`` after the agent finished; ``count`` in a row."""

    count: int
    idle_s: float


@dataclass(frozen=True)
class SessionError:
    code: str
    message: str
    recoverable: bool
    #: The request field the backend objected to, when it names one.
    param: str | None = None
    #: The backend client event the error answers, when it names one.
    event_id: str | None = None


@dataclass(frozen=True)
class Reconnecting:
    """The backend connection dropped (or is rolled over); the agent is deaf until it is back."""

    planned: bool
    reason: str = ""


@dataclass(frozen=True)
class Reconnected:
    """The backend connection is back and the conversation replayed."""

    planned: bool
    #: Drop (or planned close) -> requests flowing again.
    downtime_ms: float
    attempt: int = 1


@dataclass(frozen=True)
class SessionClosed:
    reason: str


SessionEvent: TypeAlias = (
    AgentStateChanged
    | UserStateChanged
    | UserTranscribed
    | AgentTranscribed
    | ConversationItemAdded
    | ToolCalled
    | ToolExecuted
    | MetricsCollected
    | AgentInterrupted
    | AgentHandoff
    | UserIdle
    | SessionError
    | Reconnecting
    | Reconnected
    | SessionClosed
)
