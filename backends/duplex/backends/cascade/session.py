"""`CascadeSession`: a `BackendSession` built from a speech-to-text, an LLM and a TTS stage.

Turns come from the caller's local VAD: the first frame after a commit starts an
utterance, which the STT transcribes while it is spoken; `commit_audio` ends it.
The model is local, so the conversation mirror is simply what the session gave us
plus what we produced: there is no remote state to reconcile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from duplex.agents.audio import AudioFrame
from duplex.agents.backend import (
    BackendError,
    BackendEvent,
    BackendSession,
    ItemAdded,
    ItemUpdated,
    ResponseDone,
    ResponseHandle,
    ResponseStarted,
    ToolChoice,
    UserTranscript,
)
from duplex.agents.conversation import AudioPart, Conversation, Message, apply, diff, new_item_id
from duplex.agents.errors import AudioFormatError, ResponseActiveError, SessionClosedError
from duplex.agents.stages import LLM, TTS, PartialCallback, STTSession, STTUtterance
from duplex.agents.tools import FunctionTool

from .errors import STTError, STTOverflowError
from .messages import to_chat_messages, tool_schemas
from .options import llm_options
from .response import Reply, ReplyRequest
from .text import SpokenSegment, heard_text

logger = logging.getLogger(__name__)


@dataclass
class _Utterance:
    item_id: str
    stt: STTUtterance
    audio_ms: float = 0.0
    overflowed: bool = False


class CascadeSession(BackendSession):
    def __init__(
        self,
        *,
        stt: STTSession,
        stt_rate: int,
        llm: LLM,
        tts: TTS,
        instructions: str,
        tools: Sequence[FunctionTool],
        conversation: Conversation,
        sentence_min_chars: int = 4,
    ) -> None:
        self._stt = stt
        self._stt_rate = stt_rate
        self._llm = llm
        self._tts = tts
        self._instructions = instructions
        self._tools = list(tools)
        self._mirror = Conversation(conversation.items)
        self._sentence_min_chars = sentence_min_chars
        self._events: asyncio.Queue[BackendEvent | None] = asyncio.Queue()
        self._utt: _Utterance | None = None
        self._transcribing: list[asyncio.Task[bool]] = []
        self._reply: Reply | None = None
        self._reply_task: asyncio.Task[object] | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        #: Where each assistant item's sentences sit in its audio, for `truncate`.
        self._spoken: dict[str, list[SpokenSegment]] = {}
        self._llm_options: dict[str, Any] = {}
        self._tool_choice: ToolChoice | None = None
        self._closed = False

    # --- events -------------------------------------------------------------------------
    def _emit(self, event: BackendEvent) -> None:
        if not self._closed:
            self._events.put_nowait(event)

    async def events(self) -> AsyncIterator[BackendEvent]:
        while True:
            ev = await self._events.get()
            if ev is None:
                return
            yield ev

    @property
    def conversation(self) -> Conversation:
        """The mirror: what the model will be given on the next reply."""
        return self._mirror

    # --- caller audio ---------------------------------------------------------------------
    async def push_audio(self, frame: AudioFrame) -> None:
        self._check_open()
        if frame.sample_rate != self._stt_rate:
            raise AudioFormatError(
                f"cascade input must be {self._stt_rate} Hz (the STT's rate), "
                f"got {frame.sample_rate} Hz"
            )
        frame = frame.to_mono()
        if self._utt is None:
            item_id = new_item_id()
            self._utt = _Utterance(item_id, self._stt.begin(self._partial_cb(item_id)))
        utt = self._utt
        if utt.overflowed:
            return
        try:
            await utt.stt.push(frame)
        except STTOverflowError as e:
            utt.overflowed = True
            self._emit(BackendError(e.code, str(e), recoverable=True))
            return
        utt.audio_ms += frame.duration_ms

    def _partial_cb(self, item_id: str) -> PartialCallback:
        def on_partial(text: str) -> None:
            if text:
                self._emit(UserTranscript(item_id, text, final=False))

        return on_partial

    async def commit_audio(self) -> None:
        self._check_open()
        utt, self._utt = self._utt, None
        if utt is None:
            return  # nothing was said since the last commit; a reply may still be asked for
        task = asyncio.create_task(self._finish_utterance(utt), name="cascade-stt-final")
        self._transcribing.append(task)
        task.add_done_callback(lambda t: self._transcribing.remove(t))

    async def _finish_utterance(self, utt: _Utterance) -> bool:
        """Emit the caller's message; False when there was nothing to answer."""
        try:
            text = (await utt.stt.finish()).strip()
        except STTError as e:
            self._emit(UserTranscript(utt.item_id, "", final=True, error=str(e)))
            self._emit(BackendError(e.code, f"stt: {e}", recoverable=e.recoverable))
            return False
        except Exception as e:
            logger.exception("speech-to-text failed")
            self._emit(UserTranscript(utt.item_id, "", final=True, error=repr(e)))
            self._emit(BackendError("stt_failed", repr(e), recoverable=True))
            return False
        if not text:
            # Noise or a cough: no words reached the model, so nothing joins the conversation.
            self._emit(UserTranscript(utt.item_id, "", final=True))
            return False
        msg = Message(
            role="user",
            content=(
                AudioPart(transcript=text, duration_ms=utt.audio_ms, sample_rate=self._stt_rate),
            ),
            id=utt.item_id,
        )
        previous = self._mirror.items[-1].id if len(self._mirror) else None
        self._mirror.append(msg)
        self._emit(ItemAdded(msg, previous_item_id=previous))
        self._emit(UserTranscript(utt.item_id, text, final=True))
        return True

    async def clear_audio(self) -> None:
        utt, self._utt = self._utt, None
        if utt is not None:
            await utt.stt.cancel()

    # --- configuration and conversation ------------------------------------------------
    async def update_instructions(self, text: str) -> None:
        self._instructions = text

    async def update_tools(self, tools: Sequence[FunctionTool]) -> None:
        self._tools = list(tools)

    async def update_options(self, **changes: Any) -> None:
        """Applies from the next completion: temperature, max_output_tokens, tool_choice.

        The voice belongs to the TTS stage and turns to the local VAD; changing those
        here raises `ConfigurationError`.
        """
        self._llm_options, self._tool_choice = llm_options(
            self._llm, self._llm_options, self._tool_choice, changes
        )

    async def sync(self, conversation: Conversation) -> None:
        """Adopt the session's conversation; applied as a diff so the mirror's rules hold."""
        self._check_open()
        ops = diff(self._mirror.items, conversation.items)
        if ops:
            self._mirror = Conversation(apply(self._mirror.items, ops))
            live = {it.id for it in self._mirror}
            for item_id in [k for k in self._spoken if k not in live]:
                del self._spoken[item_id]

    # --- replies ------------------------------------------------------------------------
    async def create_response(
        self, *, instructions: str | None = None, tool_choice: ToolChoice | None = None
    ) -> ResponseHandle:
        self._check_open()
        handle = ResponseHandle()
        if any(not t.done() for t in self._tasks):
            # Like a realtime server: one reply at a time. The session's reply policy
            # decides what a second request means; nothing is queued here.
            handle.fail(ResponseActiveError("a reply is already active"))
            return handle
        waiting = list(self._transcribing)
        task = asyncio.create_task(
            self._respond(handle, waiting, instructions, tool_choice), name="cascade-reply"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return handle

    async def _respond(
        self,
        handle: ResponseHandle,
        waiting: list[asyncio.Task[bool]],
        instructions: str | None,
        tool_choice: ToolChoice | None,
    ) -> None:
        try:
            await self._respond_inner(handle, waiting, instructions, tool_choice)
        except asyncio.CancelledError:
            handle.fail(SessionClosedError("the session closed before the reply ran"))
            raise

    async def _respond_inner(
        self,
        handle: ResponseHandle,
        waiting: list[asyncio.Task[bool]],
        instructions: str | None,
        tool_choice: ToolChoice | None,
    ) -> None:
        # A reply answers the turns committed before it was asked for: wait for their text.
        heard = [await asyncio.shield(t) for t in waiting]
        response_id = f"resp_{uuid.uuid4().hex[:24]}"
        handle.set_created(response_id)
        self._emit(ResponseStarted(response_id, handle.request_id))
        if waiting and not any(heard):
            done = ResponseDone(response_id, "cancelled", reason="no_input")
            self._emit(done)
            handle.set_done(done)
            return
        tools = tool_schemas(self._tools) if tool_choice != "none" else []
        request = ReplyRequest(
            response_id=response_id,
            messages=to_chat_messages(
                self._instructions if instructions is None else instructions,
                self._mirror.items,
            ),
            tools=tools,
            tool_choice=(tool_choice or self._tool_choice) if tools else None,
            llm_options=dict(self._llm_options),
        )
        reply = Reply(
            request,
            llm=self._llm,
            tts=self._tts,
            mirror=lambda: self._mirror,
            emit=self._emit,
            sentence_min_chars=self._sentence_min_chars,
        )
        self._reply = reply
        self._reply_task = asyncio.current_task()
        try:
            done = await reply.run()
        finally:
            self._reply, self._reply_task = None, None
            if reply.item_id is not None:
                self._spoken[reply.item_id] = reply.state.segments
        handle.set_done(done)

    async def cancel_response(self) -> None:
        """Stops the LLM and TTS streams; returns once the reply has reported its end."""
        task = self._reply_task
        if task is None or task.done():
            return
        task.cancel()
        await asyncio.wait({task})

    async def truncate(self, item_id: str, audio_end_ms: int) -> None:
        """Keep only the words the caller heard: whole sentences, then a share of the next."""
        self._check_open()
        if self._reply is not None and self._reply.item_id == item_id:
            await self.cancel_response()
        item = self._mirror.get(item_id)
        if not isinstance(item, Message) or item.role != "assistant":
            self._emit(
                BackendError(
                    "item_not_found",
                    f"truncate: no assistant message {item_id!r} in the conversation",
                )
            )
            return
        played = max(0.0, min(float(audio_end_ms), item.audio_ms))
        text = heard_text(self._spoken.get(item_id, []), played)
        self._mirror.truncate_message(item_id, played, text)
        updated = self._mirror.get(item_id)
        assert updated is not None
        self._emit(ItemUpdated(updated))

    # --- lifecycle ----------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise SessionClosedError("cascade session is closed")

    async def aclose(self) -> None:
        if self._closed:
            return
        if self._utt is not None:
            with contextlib.suppress(Exception):
                await self._utt.stt.cancel()
            self._utt = None
        pending = [*self._tasks, *self._transcribing]
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self._closed = True
        await self._stt.aclose()
        self._events.put_nowait(None)
