"""The three pluggable stages of a cascade: speech-to-text, language model, text-to-speech.

They are kept this small so a local model (Whisper, Piper), a vLLM endpoint or any
OpenAI-compatible server fits behind them with a few dozen lines each, and they live in
the core so plugins implement them without importing a backend.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from .audio import AudioFrame
from .backend import ToolChoice, Usage

#: Receives the transcript so far each time it changes (the whole text, not a delta:
#: a re-transcribing STT may revise earlier words).
PartialCallback: TypeAlias = Callable[[str], None]


# --- speech-to-text ---------------------------------------------------------------------
class STTUtterance(ABC):
    """One caller turn being transcribed while it is spoken."""

    @abstractmethod
    async def push(self, frame: AudioFrame) -> None:
        """Mono audio at the stage's ``sample_rate``; transcription runs while audio arrives."""

    @abstractmethod
    async def finish(self) -> str:
        """End of the turn: the final transcript (the work done while speaking makes it quick)."""

    @abstractmethod
    async def cancel(self) -> None:
        """Drop the turn; no transcript is produced."""


class STTSession(ABC):
    """Per-call state (a connection, a buffer); utterances are transcribed one after another."""

    @abstractmethod
    def begin(self, on_partial: PartialCallback | None = None) -> STTUtterance:
        """Start the next utterance; it may queue behind one that is still finishing."""

    @abstractmethod
    async def aclose(self) -> None: ...


class STT(ABC):
    """Configuration and shared resources (a loaded model); one per deployment."""

    #: Rate the stage wants its audio in (mono int16).
    sample_rate: int = 16000

    @abstractmethod
    async def connect(self) -> STTSession: ...

    async def prepare(self) -> None:  # noqa: B027 - optional: remote stages need nothing
        """Load what the first utterance would otherwise wait for (a local model)."""

    async def aclose(self) -> None:  # noqa: B027 - optional: stateless stages need nothing
        """Release shared resources."""


# --- language model ---------------------------------------------------------------------
@dataclass(frozen=True)
class TextChunk:
    text: str


@dataclass(frozen=True)
class ToolCallChunk:
    """A complete tool call (arguments fully assembled)."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class UsageChunk:
    usage: Usage


LLMChunk: TypeAlias = TextChunk | ToolCallChunk | UsageChunk


class LLM(ABC):
    """Streams one completion for a chat-completions message list."""

    @abstractmethod
    def stream(
        self,
        messages: Sequence[dict[str, Any]],
        *,
        tools: Sequence[dict[str, Any]] = (),
        tool_choice: ToolChoice | None = None,
    ) -> AsyncIterator[LLMChunk]:
        """Text as it is generated, complete tool calls, then usage; raises `LLMError`.

        Closing the iterator early (``aclose``) must stop the generation upstream.
        """

    async def aclose(self) -> None:  # noqa: B027 - optional: stateless stages need nothing
        """Release shared resources (HTTP pools)."""


# --- text-to-speech ---------------------------------------------------------------------
class TTS(ABC):
    """Speaks one piece of text (the cascade calls it once per sentence)."""

    #: Rate of every frame `synthesize` yields (mono int16).
    sample_rate: int = 24000

    async def prepare(self) -> None:  # noqa: B027 - optional: remote stages need nothing
        """Load what the first sentence would otherwise wait for (a local voice)."""

    @abstractmethod
    def synthesize(self, text: str) -> AsyncIterator[AudioFrame]:
        """Audio as it is produced; raises `TTSError`. Closing early must stop the work."""

    async def aclose(self) -> None:  # noqa: B027 - optional: stateless stages need nothing
        """Release shared resources."""
