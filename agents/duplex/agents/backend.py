"""The seam between the session and a model: `Backend`, `BackendSession`, `BackendEvent`.

A backend turns its wire protocol into the closed `BackendEvent` union and back;
nothing protocol-specific crosses this line.
"""

from __future__ import annotations

import asyncio
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from .audio import AudioFrame
from .conversation import Conversation, Item
from .errors import ConfigurationError
from .tools import FunctionTool


class _Unchanged:
    def __repr__(self) -> str:
        return "UNCHANGED"


#: `BackendSession.update_options` default for options where None has a meaning.
UNCHANGED: Any = _Unchanged()

ToolChoice: TypeAlias = Literal["auto", "none", "required"] | str
ResponseStatus = Literal["completed", "cancelled", "failed", "incomplete"]


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do; the session adapts its behaviour to it."""

    #: The server detects turns and answers on its own (no commit/create from the session).
    server_vad: bool = False
    #: The server can cut an assistant item to the audio actually played.
    truncation: bool = True
    audio_output: bool = True
    #: Rates the backend wants in and gives out (mono int16).
    input_sample_rate: int = 24000
    output_sample_rate: int = 24000
    tools: bool = True
    #: Transcripts of the caller's speech are produced.
    user_transcription: bool = True
    #: The backend itself requests the follow-up reply after tool outputs.
    auto_tool_reply: bool = False
    #: Server VAD cancels the response itself when the caller speaks (interrupt_response).
    server_interrupts: bool = False
    #: With server VAD: the server also starts the reply (create_response). When False the
    #: session asks for one after each turn the server detects.
    server_replies: bool = True


# --- events -----------------------------------------------------------------------------
@dataclass(frozen=True)
class SpeechStarted:
    """The backend's own VAD heard the caller start (server VAD only)."""

    audio_start_ms: float | None = None
    item_id: str | None = None


@dataclass(frozen=True)
class SpeechStopped:
    audio_end_ms: float | None = None
    item_id: str | None = None


@dataclass(frozen=True)
class UserTranscript:
    item_id: str
    text: str
    final: bool
    #: Set when the transcription failed; ``text`` then holds what arrived before.
    error: str | None = None


@dataclass(frozen=True)
class ResponseStarted:
    response_id: str
    #: The request id of `create_response` this answers, or None for a server-initiated one.
    request_id: str | None = None


@dataclass(frozen=True)
class AudioDelta:
    response_id: str
    item_id: str
    frame: AudioFrame


@dataclass(frozen=True)
class TextDelta:
    """Reply text as it streams: the transcript of audio, or the text of a text reply."""

    response_id: str
    item_id: str
    text: str


@dataclass(frozen=True)
class FunctionCallRequested:
    response_id: str
    item_id: str
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    input_text_tokens: int = 0
    input_audio_tokens: int = 0
    input_cached_tokens: int = 0
    output_text_tokens: int = 0
    output_audio_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class ResponseDone:
    response_id: str
    status: ResponseStatus
    usage: Usage | None = None
    #: Why it stopped early (turn_detected, client_cancelled, max_output_tokens, ...).
    reason: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class ItemAdded:
    """The server's conversation gained (or changed) an item; the session mirrors it."""

    item: Item
    previous_item_id: str | None = None


@dataclass(frozen=True)
class ItemUpdated:
    item: Item


@dataclass(frozen=True)
class ItemDeleted:
    item_id: str


@dataclass(frozen=True)
class BackendError:
    code: str
    message: str
    recoverable: bool = True
    #: The request field the server objected to, when it names one.
    param: str | None = None
    #: The client event the error answers, when the server names it.
    event_id: str | None = None


@dataclass(frozen=True)
class Reconnecting:
    """The connection went away (or is being rolled over); requests wait until it is back."""

    #: A rollover before the server's session limit, not a failure.
    planned: bool = False
    reason: str = ""


@dataclass(frozen=True)
class Reconnected:
    """The connection was rebuilt and the whole conversation replayed."""

    attempt: int = 1
    #: A rollover before the server's session limit, not a failure.
    planned: bool = False
    #: From the drop (or the planned close) until requests flow again.
    downtime_ms: float = 0.0


@dataclass(frozen=True)
class RateLimits:
    limits: tuple[dict[str, Any], ...] = ()


BackendEvent: TypeAlias = (
    SpeechStarted
    | SpeechStopped
    | UserTranscript
    | ResponseStarted
    | AudioDelta
    | TextDelta
    | FunctionCallRequested
    | ResponseDone
    | ItemAdded
    | ItemUpdated
    | ItemDeleted
    | BackendError
    | Reconnecting
    | Reconnected
    | RateLimits
)


# --- response handle --------------------------------------------------------------------
@dataclass(eq=False)
class ResponseHandle:
    """One `create_response` request: resolves to the response id, then to its end."""

    request_id: str = field(default_factory=lambda: f"req_{uuid.uuid4().hex[:16]}")
    created: asyncio.Future[str] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    done: asyncio.Future[ResponseDone] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def set_created(self, response_id: str) -> None:
        if not self.created.done():
            self.created.set_result(response_id)

    def set_done(self, event: ResponseDone) -> None:
        self.set_created(event.response_id)
        if not self.done.done():
            self.done.set_result(event)

    def fail(self, exc: BaseException) -> None:
        for fut in (self.created, self.done):
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # mark retrieved: a failed reply must not warn at exit


# --- interfaces -------------------------------------------------------------------------
class BackendSession(ABC):
    """One live connection to a model, owned by one `AgentSession`."""

    @abstractmethod
    async def push_audio(self, frame: AudioFrame) -> None:
        """Caller audio, mono at ``capabilities.input_sample_rate``."""

    def push_audio_nowait(self, frame: AudioFrame) -> bool:
        """`push_audio` without awaiting, from the caller's frame callback, when possible.

        True: the frame is taken (and `push_audio` is not called for it). The default
        False sends every frame through `push_audio`.
        """
        return False

    @abstractmethod
    async def commit_audio(self) -> None:
        """End of the caller's turn (local VAD mode)."""

    @abstractmethod
    async def clear_audio(self) -> None: ...

    @abstractmethod
    async def update_instructions(self, text: str) -> None: ...

    @abstractmethod
    async def update_tools(self, tools: Sequence[FunctionTool]) -> None: ...

    async def update_options(
        self,
        *,
        voice: str | None = None,
        turn_detection: Any = UNCHANGED,
        temperature: float | None = None,
        tool_choice: ToolChoice | None = None,
        max_output_tokens: int | Literal["inf"] | None = None,
        modalities: Sequence[str] | None = None,
        server_interrupts: bool | None = None,
        server_replies: bool | None = None,
    ) -> None:
        """Change what a live session can change; None (or `UNCHANGED`) keeps a setting.

        ``turn_detection`` is the backend's own turn-detection option (None turns the
        server's VAD off); ``server_interrupts`` says whether the server's VAD may cancel
        a reply on caller speech by itself, ``server_replies`` whether it answers a turn it
        detected by itself (else the session asks). A backend raises `ConfigurationError` for what
        it cannot change (e.g. the voice once audio was produced).
        """
        raise ConfigurationError(f"{type(self).__name__} cannot change options live")

    async def update_agent(
        self, *, instructions: str, tools: Sequence[FunctionTool], **options: Any
    ) -> None:
        """A handoff: new instructions, tools and options at once.

        Backends that can say it in one message (OpenAI's ``session.update``) override this.
        """
        await self.update_instructions(instructions)
        await self.update_tools(tools)
        if options:
            await self.update_options(**options)

    @abstractmethod
    async def sync(self, conversation: Conversation) -> None:
        """Make the remote conversation equal to ``conversation`` (minimal diff, acknowledged)."""

    @abstractmethod
    async def create_response(
        self, *, instructions: str | None = None, tool_choice: ToolChoice | None = None
    ) -> ResponseHandle: ...

    @abstractmethod
    async def cancel_response(self) -> None:
        """Cancel the active response, if the backend still considers one active."""

    @abstractmethod
    async def truncate(self, item_id: str, audio_end_ms: int) -> None:
        """Cut an assistant item to what the caller heard (0 < audio_end_ms)."""

    @abstractmethod
    def events(self) -> AsyncIterator[BackendEvent]: ...

    def deliver_nowait(self, handler: Callable[[BackendEvent], bool] | None) -> None:  # noqa: B027
        """Offer events to ``handler`` from the receiving callback instead of through `events`.

        Saves the consumer a task wake-up per streamed delta. A backend that honours it
        offers an event only when nothing is queued ahead of it and the consumer is
        waiting in `events` (so order holds); ``handler`` returns False for an event it
        must see through `events`, which then goes there. None withdraws the handler.
        The default delivers everything through `events`.
        """

    @abstractmethod
    async def aclose(self) -> None: ...


class Backend(ABC):
    """Configuration and factory: one per agent deployment, many sessions."""

    capabilities: Capabilities

    @abstractmethod
    async def connect(
        self,
        *,
        instructions: str,
        tools: Sequence[FunctionTool],
        conversation: Conversation,
    ) -> BackendSession: ...

    async def prewarm(self) -> None:  # noqa: B027 - optional: remote backends load nothing
        """Load models before the first call, so it does not pay for them (`agent dev` calls it)."""

    async def aclose(self) -> None:  # noqa: B027 - optional: most backends hold nothing shared
        """Release shared resources (model weights, HTTP pools)."""
