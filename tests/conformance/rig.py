"""What the conformance driver needs from a backend and its test server (one `Rig` each).

A rig scripts replies on the server side, and reads the server's truth back: its
conversation, the audio it keeps per assistant item, the truncations it was asked
for and how often each tool output was created. Nothing here reads the client.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from duplex.agents import AgentSession
from duplex.agents.audio import AudioFrame
from duplex.agents.backend import Backend
from duplex.agents.conversation import FunctionCall, FunctionCallOutput, Item, Message


@dataclass(frozen=True)
class ReplySpec:
    """One scripted reply: tagged audio of ``audio_ms`` saying ``text``, or tool calls only."""

    tag: int = 0
    audio_ms: int = 0
    text: str = ""
    #: (tool name, JSON arguments) called instead of speaking.
    calls: tuple[tuple[str, str], ...] = ()
    #: The server drops the connection after this many ms of the reply's audio.
    drop_after_ms: int | None = None

    @property
    def speaks(self) -> bool:
        return self.audio_ms > 0


#: Errors no client can always avoid: a cancel crosses the backend's own end of the reply.
RACES = frozenset({"response_cancel_not_active"})


@dataclass(frozen=True)
class SItem:
    """An item as the server holds it, reduced to what both sides must agree on."""

    id: str | None
    kind: str  # "user" | "assistant" | "call" | "output" | "system"
    text: str = ""
    #: Milliseconds of audio kept (assistant audio items), None when not known on this side.
    audio_ms: float | None = None
    call_id: str = ""
    name: str = ""
    #: The item carries a truncation mark (known on the client side only).
    truncated: bool = field(default=False, compare=False)


def local_items(items: tuple[Item, ...] | list[Item]) -> list[SItem]:
    """The client's conversation in the same reduced shape."""
    out: list[SItem] = []
    for it in items:
        if isinstance(it, Message):
            kind = it.role if it.role in ("assistant", "user") else "system"
            kept = it.truncated_ms if it.truncated_ms is not None else it.audio_ms
            has_audio = bool(it.audio_ms or it.truncated_ms)
            out.append(
                SItem(
                    it.id,
                    kind,
                    it.text,
                    kept if has_audio else None,
                    truncated=it.truncated_ms is not None,
                )
            )
        elif isinstance(it, FunctionCall):
            out.append(SItem(it.id, "call", it.arguments, call_id=it.call_id, name=it.name))
        elif isinstance(it, FunctionCallOutput):
            out.append(SItem(it.id, "output", it.output, call_id=it.call_id))
    return out


class Rig(ABC):
    """One backend plus the test servers behind it."""

    name: str
    #: Rate of the caller audio the transport hands the session.
    input_rate: int = 24000
    #: The server may hold items the client does not show (and the reverse) only here.
    backend: Backend
    #: True when the backend can be told to drop its connection mid-reply.
    can_drop: bool = False
    #: True when assistant items on the server carry their audio (truncation applies).
    server_holds_audio: bool = True

    async def start(self) -> None:  # noqa: B027 - optional
        """Start the servers."""

    async def stop(self) -> None:  # noqa: B027 - optional
        """Stop the servers."""

    def session_options(self) -> dict[str, Any]:
        return {}

    def attach(self, session: AgentSession) -> None:  # noqa: B027 - optional
        """The session is made (rigs that snapshot the client's state keep it)."""

    @abstractmethod
    def plan(self, spec: ReplySpec) -> None:
        """Queue the next reply the server will give."""

    @abstractmethod
    def expect_words(self, text: str) -> None:
        """The words the server's speech-to-text will hear in the next caller turn."""

    @abstractmethod
    def responses_started(self) -> int:
        """Replies the server has started so far (all connections)."""

    @abstractmethod
    def idle(self) -> bool:
        """No reply is being generated on the server."""

    @abstractmethod
    def conversation(self) -> list[SItem] | None:
        """The server's conversation now (None: no item ids on the wire; the rig's
        `check_server` compares the conversation its own way)."""

    @abstractmethod
    def item_tags(self) -> dict[str, int]:
        """Assistant item id -> tag of the reply audio the server generated for it."""

    @abstractmethod
    def truncations(self) -> list[tuple[str, int]]:
        """(item id, audio_end_ms) of every truncate the server received."""

    @abstractmethod
    def output_creations(self) -> Counter[str]:
        """call_id -> how many times a function_call_output was created on the server,
        counting the current connection only (a reconnect replays the conversation)."""

    def check_server(self) -> list[str]:
        """Rig-specific problems (protocol violations the server collected)."""
        return []

    def reply_audio(self, spec: ReplySpec) -> AudioFrame:
        from .signal import tagged

        return tagged(spec.tag, spec.audio_ms)
