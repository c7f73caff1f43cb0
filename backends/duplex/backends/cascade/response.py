"""One reply of the cascade: stream the LLM, speak it sentence by sentence, report what was said.

The language model and the speech synthesis run concurrently: sentence one is being
spoken while the model still writes sentence two, so the first audio does not wait
for the whole reply. What reaches the conversation is only what was sent as audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from duplex.agents.backend import (
    AudioDelta,
    BackendError,
    BackendEvent,
    FunctionCallRequested,
    ItemAdded,
    ItemDeleted,
    ItemUpdated,
    ResponseDone,
    ResponseStatus,
    TextDelta,
    ToolChoice,
    Usage,
)
from duplex.agents.conversation import AudioPart, Conversation, FunctionCall, Message
from duplex.agents.stages import LLM, TTS, TextChunk, ToolCallChunk, UsageChunk

from .errors import StageError
from .text import SentenceSplitter, SpokenSegment

logger = logging.getLogger(__name__)
T = TypeVar("T")

_END = object()  # end of the sentence queue


@contextlib.asynccontextmanager
async def _closing(stream: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    """Close a stage's stream when the reply stops early, so its socket or thread stops too."""
    try:
        yield stream
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()


@dataclass
class ReplyRequest:
    response_id: str
    messages: list[dict[str, Any]]
    tools: Sequence[dict[str, Any]]
    tool_choice: ToolChoice | None
    #: Per-session sampling overrides for the LLM stage (temperature, max_tokens).
    llm_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReplyState:
    """What the reply has produced so far; read by truncation after the reply ends."""

    message: Message | None = None
    segments: list[SpokenSegment] = field(default_factory=list)
    audio_ms: float = 0.0
    calls: list[ToolCallChunk] = field(default_factory=list)
    usage: Usage | None = None


class Reply:
    """Runs one response; `run` always ends with exactly one `ResponseDone`."""

    def __init__(
        self,
        request: ReplyRequest,
        *,
        llm: LLM,
        tts: TTS,
        mirror: Callable[[], Conversation],
        emit: Callable[[BackendEvent], None],
        sentence_min_chars: int = 4,
    ) -> None:
        self.request = request
        self.state = ReplyState()
        self._llm = llm
        self._tts = tts
        self._mirror = mirror
        self._emit = emit
        self._splitter = SentenceSplitter(sentence_min_chars)
        self._sentences: asyncio.Queue[object] = asyncio.Queue()
        self._llm_error: BaseException | None = None

    @property
    def item_id(self) -> str | None:
        return self.state.message.id if self.state.message else None

    async def run(self) -> ResponseDone:
        status: ResponseStatus = "completed"
        reason: str | None = None
        error: str | None = None
        producer = asyncio.create_task(self._produce(), name="cascade-llm")
        try:
            await self._speak()
            await producer
            if self._llm_error is not None:
                raise self._llm_error
        except asyncio.CancelledError:
            status, reason = "cancelled", "client_cancelled"
        except StageError as e:
            status, error = "failed", str(e)
            self._emit(BackendError(e.code, f"{e.stage}: {e}", recoverable=True))
        except Exception as e:  # a bug in a stage must not take the call down
            logger.exception("cascade reply failed")
            status, error = "failed", f"{type(e).__name__}: {e}"
            self._emit(BackendError("internal_error", error, recoverable=True))
        finally:
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)
        self._finish_message(status)
        if status == "completed":
            self._add_calls()
        done = ResponseDone(
            self.request.response_id, status, self.state.usage, reason=reason, error=error
        )
        self._emit(done)
        return done

    # --- language model -> sentences --------------------------------------------------
    async def _produce(self) -> None:
        req = self.request
        stream = self._llm.stream(
            req.messages, tools=req.tools, tool_choice=req.tool_choice, **req.llm_options
        )
        try:
            async with _closing(stream):
                async for chunk in stream:
                    if isinstance(chunk, TextChunk):
                        if chunk.text:
                            self._ensure_message()
                            for sentence in self._splitter.push(chunk.text):
                                self._sentences.put_nowait(sentence)
                    elif isinstance(chunk, ToolCallChunk):
                        self.state.calls.append(chunk)
                    elif isinstance(chunk, UsageChunk):
                        self.state.usage = chunk.usage
            rest = self._splitter.flush()
            if rest:
                self._sentences.put_nowait(rest)
        except StageError as e:
            self._llm_error = e  # raised by `run` after the sentences already made are spoken
        finally:
            self._sentences.put_nowait(_END)

    def _ensure_message(self) -> None:
        if self.state.message is not None:
            return
        msg = Message(
            role="assistant",
            content=(AudioPart(transcript="", duration_ms=0.0, sample_rate=self._tts.sample_rate),),
            complete=False,
        )
        self.state.message = msg
        self._add_item(msg)

    # --- sentences -> audio -----------------------------------------------------------
    async def _speak(self) -> None:
        while True:
            sentence = await self._sentences.get()
            if sentence is _END:
                return
            assert isinstance(sentence, str) and self.state.message is not None
            await self._speak_one(sentence, self.state.message.id)

    async def _speak_one(self, sentence: str, item_id: str) -> None:
        st = self.state
        seg: SpokenSegment | None = None
        stream = self._tts.synthesize(sentence)
        async with _closing(stream):
            async for frame in stream:
                if seg is None:
                    seg = SpokenSegment(sentence, st.audio_ms, st.audio_ms)
                    st.segments.append(seg)
                    text = sentence if len(st.segments) == 1 else " " + sentence
                    self._emit(TextDelta(self.request.response_id, item_id, text))
                st.audio_ms += frame.duration_ms
                seg.end_ms = st.audio_ms
                self._emit(AudioDelta(self.request.response_id, item_id, frame))

    # --- conversation -----------------------------------------------------------------
    def _finish_message(self, status: ResponseStatus) -> None:
        msg = self.state.message
        if msg is None:
            return
        mirror = self._mirror()
        if msg.id not in mirror:
            return  # the session deleted it meanwhile (sync); nothing to report
        if not self.state.segments and status == "failed":
            mirror.remove(msg.id)
            self._emit(ItemDeleted(msg.id))
            self.state.message = None
            return
        spoken = " ".join(s.text for s in self.state.segments)
        final = Message(
            role="assistant",
            content=(
                AudioPart(
                    transcript=spoken,
                    duration_ms=self.state.audio_ms,
                    sample_rate=self._tts.sample_rate,
                ),
            ),
            id=msg.id,
            complete=True,
        )
        self.state.message = final
        mirror.replace(final)
        self._emit(ItemUpdated(final))

    def _add_calls(self) -> None:
        for call in self.state.calls:
            item = FunctionCall(call_id=call.call_id, name=call.name, arguments=call.arguments)
            self._add_item(item)
            self._emit(
                FunctionCallRequested(
                    self.request.response_id, item.id, call.call_id, call.name, call.arguments
                )
            )

    def _add_item(self, item: Message | FunctionCall) -> None:
        mirror = self._mirror()
        previous = mirror.items[-1].id if len(mirror) else None
        mirror.append(item)
        self._emit(ItemAdded(item, previous_item_id=previous))
