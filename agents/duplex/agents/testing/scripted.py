"""`ScriptedBackend`: a backend whose replies you script and whose every call is recorded.

It keeps the rules a realtime server keeps — one active response at a time,
truncation only within the audio an item has, cancel only while active — so a
test that passes here exercises the session's real obligations.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..audio import AudioFrame, FrameChunker
from ..backend import (
    UNCHANGED,
    AudioDelta,
    Backend,
    BackendError,
    BackendEvent,
    BackendSession,
    Capabilities,
    FunctionCallRequested,
    ItemAdded,
    ItemDeleted,
    ItemUpdated,
    ResponseDone,
    ResponseHandle,
    ResponseStarted,
    SpeechStarted,
    SpeechStopped,
    TextDelta,
    ToolChoice,
    Usage,
    UserTranscript,
)
from ..conversation import (
    AudioPart,
    Conversation,
    Create,
    Delete,
    FunctionCall,
    Item,
    Message,
    apply,
    diff,
    new_item_id,
)
from ..errors import AudioFormatError, BackendErrorException, SessionClosedError
from ..tools import FunctionTool
from .memory import tone

_CLOSE = object()


@dataclass(frozen=True)
class ScriptedCall:
    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """One scripted response. Audio defaults to a tone as long as ``audio_ms``."""

    text: str = ""
    audio: AudioFrame | None = None
    audio_ms: float = 0.0
    calls: tuple[ScriptedCall, ...] = ()
    #: Keep the response open after its content until it is cancelled or `release()`d.
    hold: bool = False
    #: End the response as failed with this error instead of speaking.
    error: str | None = None
    chunk_ms: float = 20.0


@dataclass(frozen=True)
class Call:
    method: str
    args: dict[str, Any]


class ScriptedSession(BackendSession):
    def __init__(self, backend: ScriptedBackend) -> None:
        self.backend = backend
        self.caps = backend.capabilities
        self.calls: list[Call] = []
        self.errors: list[BackendError] = []
        self.pushed_samples = 0
        self.mirror: list[Item] = []
        #: One handle per `create_response`, in order.
        self.handles: list[ResponseHandle] = []
        self.instructions = ""
        self.tools: list[FunctionTool] = []
        #: Options changed live through `update_options`.
        self.options: dict[str, Any] = {}
        self._events: asyncio.Queue[BackendEvent | object] = asyncio.Queue()
        self._active: tuple[str, asyncio.Task[None]] | None = None
        self._release = asyncio.Event()
        self._called = asyncio.Condition()
        self._closed = False
        self._item_audio_ms: dict[str, float] = {}
        self._item_text: dict[str, str] = {}
        self._active_item: str | None = None
        #: Item id -> ItemAdded/ItemUpdated events emitted but not yet consumed by the session.
        self._undelivered: dict[str, int] = {}
        #: Items whose ItemAdded the session has not consumed yet.
        self._unseen: set[str] = set()

    # recording --------------------------------------------------------------------------
    async def _record(self, method: str, **args: Any) -> None:
        if self._closed:
            raise SessionClosedError("scripted session is closed")
        self.calls.append(Call(method, args))
        async with self._called:
            self._called.notify_all()

    def called(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    async def wait_for_call(self, method: str, count: int = 1, timeout: float = 10.0) -> Call:
        """The ``count``-th call of ``method``, waiting for it if needed."""

        async def wait() -> Call:
            async with self._called:
                await self._called.wait_for(lambda: len(self.called(method)) >= count)
            return self.called(method)[count - 1]

        return await asyncio.wait_for(wait(), timeout)

    def emit(self, event: BackendEvent) -> None:
        """Inject an event, e.g. server VAD's `SpeechStarted`."""
        if isinstance(event, (ItemAdded, ItemUpdated)):
            self._undelivered[event.item.id] = self._undelivered.get(event.item.id, 0) + 1
        if isinstance(event, ItemAdded):
            self._unseen.add(event.item.id)
        self._events.put_nowait(event)

    def speech_started(self) -> None:
        self.emit(SpeechStarted())

    def speech_stopped(self) -> None:
        self.emit(SpeechStopped())

    def release(self) -> None:
        """Let a held response finish."""
        self._release.set()

    def _error(self, code: str, message: str) -> BackendErrorException:
        err = BackendError(code, message, True)
        self.errors.append(err)
        self.emit(err)
        return BackendErrorException(message, code=code)

    # BackendSession ---------------------------------------------------------------------
    async def push_audio(self, frame: AudioFrame) -> None:
        if frame.sample_rate != self.caps.input_sample_rate or frame.channels != 1:
            raise AudioFormatError(
                f"backend takes mono {self.caps.input_sample_rate} Hz, got "
                f"{frame.channels} ch {frame.sample_rate} Hz"
            )
        self.pushed_samples += frame.samples_per_channel
        await self._record("push_audio", samples=frame.samples_per_channel)

    async def commit_audio(self) -> None:
        await self._record("commit_audio", samples=self.pushed_samples)
        transcripts = self.backend.user_transcripts
        text = transcripts.pop(0) if transcripts else ""
        item = Message(
            role="user",
            content=(
                AudioPart(
                    transcript=text,
                    duration_ms=1000 * self.pushed_samples / self.caps.input_sample_rate,
                ),
            ),
        )
        self._add(item)
        self.emit(UserTranscript(item.id, text, True))

    async def clear_audio(self) -> None:
        await self._record("clear_audio")

    async def update_instructions(self, text: str) -> None:
        self.instructions = text
        await self._record("update_instructions", text=text)

    async def update_tools(self, tools: Sequence[FunctionTool]) -> None:
        self.tools = list(tools)
        await self._record("update_tools", names=[t.name for t in tools])

    async def update_options(self, **changes: Any) -> None:
        """Recorded, like every call; only the options actually given are kept."""
        given = {k: v for k, v in changes.items() if v is not None and v is not UNCHANGED}
        self.options.update(given)
        await self._record("update_options", **given)

    async def sync(self, conversation: Conversation) -> None:
        # Like a real backend: what the session has not consumed yet is not undone. An item
        # with updates in flight (a reply still streaming) is taken as the server holds it;
        # one whose ItemAdded is in flight is kept where the server has it.
        held = {it.id: it for it in self.mirror}
        local = [
            held[it.id] if self._undelivered.get(it.id) and it.id in held else it
            for it in conversation.items
        ]
        ids = {it.id for it in local}
        for idx, m in enumerate(self.mirror):
            if m.id in self._unseen and m.id not in ids:
                before = [p.id for p in self.mirror[:idx] if p.id in ids]
                pos = 0 if not before else [it.id for it in local].index(before[-1]) + 1
                local.insert(pos, m)
                ids.add(m.id)
        ops = diff(self.mirror, local)
        await self._record("sync", ops=ops)
        self.mirror = apply(self.mirror, ops)
        for op in ops:
            if isinstance(op, Delete):
                self.emit(ItemDeleted(op.item_id))
            elif isinstance(op, Create):
                # An acknowledgement of the session's own item: nothing it has not seen.
                self._events.put_nowait(ItemAdded(op.item, op.previous_item_id))

    async def create_response(
        self, *, instructions: str | None = None, tool_choice: ToolChoice | None = None
    ) -> ResponseHandle:
        handle = ResponseHandle()
        self.handles.append(handle)
        await self._record("create_response", instructions=instructions, tool_choice=tool_choice)
        if self._active is not None:
            handle.fail(
                self._error(
                    "conversation_already_has_active_response",
                    f"Conversation already has an active response in progress: {self._active[0]}",
                )
            )
            return handle
        if not self.backend.replies:
            handle.fail(self._error("no_scripted_reply", "the script has no reply left"))
            return handle
        reply = self.backend.replies.pop(0)
        rid = f"resp_{uuid.uuid4().hex[:12]}"
        self._release = asyncio.Event()
        task = asyncio.create_task(self._play(rid, handle, reply))
        self._active = (rid, task)
        return handle

    async def cancel_response(self) -> None:
        await self._record("cancel_response")
        if self._active is None:
            # The reply ended before the cancel reached it: a race the real adapters
            # absorb (OpenAI's drops the server's error), so it is kept here, not emitted.
            self.errors.append(
                BackendError(
                    "response_cancel_not_active",
                    "Cancellation failed: no active response found",
                    True,
                )
            )
            return
        rid, task = self._active
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._active = None
        self._finish_partial_item()
        done = ResponseDone(rid, "cancelled", reason="client_cancelled")
        self.emit(done)
        self.handles[-1].set_done(done)

    async def truncate(self, item_id: str, audio_end_ms: int) -> None:
        await self._record("truncate", item_id=item_id, audio_end_ms=audio_end_ms)
        item = next((it for it in self.mirror if it.id == item_id), None)
        if not isinstance(item, Message) or item.role != "assistant" or not item.audio_ms:
            raise self._error("invalid_value", "Only model output audio messages can be truncated")
        if audio_end_ms <= 0 or audio_end_ms > item.audio_ms + 1e-6:
            raise self._error(
                "invalid_value",
                f"audio_end_ms {audio_end_ms} is beyond the item's {item.audio_ms:.0f} ms of audio",
            )
        frac = audio_end_ms / item.audio_ms
        text = item.text
        heard = " ".join(text.split()[: round(len(text.split()) * frac)])
        part = AudioPart(transcript=heard, duration_ms=float(audio_end_ms))
        cut = replace(item, content=(part,), truncated_ms=float(audio_end_ms))
        self.mirror = [cut if it.id == item_id else it for it in self.mirror]
        self.emit(ItemUpdated(cut))

    async def events(self) -> AsyncIterator[BackendEvent]:
        while True:
            ev = await self._events.get()
            if isinstance(ev, ItemAdded):
                self._unseen.discard(ev.item.id)
            if isinstance(ev, (ItemAdded, ItemUpdated)):
                left = self._undelivered.get(ev.item.id, 1) - 1
                if left > 0:
                    self._undelivered[ev.item.id] = left
                else:
                    self._undelivered.pop(ev.item.id, None)
            if ev is _CLOSE:
                return
            yield ev  # type: ignore[misc]

    async def aclose(self) -> None:
        if self._closed:
            return
        self.calls.append(Call("aclose", {}))
        if self._active is not None:
            self._active[1].cancel()
        self._closed = True
        self._events.put_nowait(_CLOSE)

    def drop(self) -> None:
        """Simulate the connection dying: the event stream just ends."""
        self._events.put_nowait(_CLOSE)

    # internals --------------------------------------------------------------------------
    def _finish_partial_item(self) -> None:
        """Like the real service: a cancelled item ends with the audio generated so far."""
        item = next((it for it in self.mirror if it.id == self._active_item), None)
        if isinstance(item, Message) and not item.complete:
            ms = self._item_audio_ms.get(item.id, 0.0)
            said = self._item_text.get(item.id, "")
            done = replace(item, content=(AudioPart(said, ms),), complete=True)
            self.mirror = [done if it.id == item.id else it for it in self.mirror]
            self.emit(ItemUpdated(done))
        self._active_item = None

    def _say(self, rid: str, item_id: str, text: str) -> None:
        self._item_text[item_id] = self._item_text.get(item_id, "") + text
        self.emit(TextDelta(rid, item_id, text))

    def _add(self, item: Item) -> None:
        prev = self.mirror[-1].id if self.mirror else None
        self.mirror.append(item)
        self.emit(ItemAdded(item, prev))

    async def _play(self, rid: str, handle: ResponseHandle, reply: Reply) -> None:
        handle.set_created(rid)
        self.emit(ResponseStarted(rid, handle.request_id))
        usage = Usage(input_tokens=10, output_tokens=len(reply.text.split()) + 1)
        if reply.error:
            self._active = None
            done = ResponseDone(rid, "failed", error=reply.error)
            self.emit(done)
            handle.set_done(done)
            return
        audio = reply.audio
        rate = self.caps.output_sample_rate
        if audio is None and reply.audio_ms > 0:
            audio = tone(reply.audio_ms, rate)
        if audio is not None or reply.text:
            msg = Message(role="assistant", content=(AudioPart(),), complete=False)
            self._active_item = msg.id
            self._add(msg)
            total_ms = 0.0
            if audio is not None:
                if audio.sample_rate != rate:
                    raise AudioFormatError("scripted audio must be at the output rate")
                chunker = FrameChunker(rate, 1, reply.chunk_ms)
                chunks = list(chunker.push(audio))
                rest = chunker.flush()
                chunks += [rest] if rest is not None else []
                words = reply.text.split()
                for i, chunk in enumerate(chunks):
                    total_ms += chunk.duration_ms
                    self._item_audio_ms[msg.id] = total_ms
                    self.emit(AudioDelta(rid, msg.id, chunk))
                    if words and i < len(words):
                        self._say(rid, msg.id, (" " if i else "") + words[i])
                    await asyncio.sleep(0)  # let the session interleave, as a socket would
                if len(words) > len(chunks):
                    self._say(rid, msg.id, " " + " ".join(words[len(chunks) :]))
            else:
                self._say(rid, msg.id, reply.text)
            final = replace(
                msg,
                content=(AudioPart(transcript=reply.text, duration_ms=total_ms),),
                complete=True,
            )
            self.mirror = [final if it.id == msg.id else it for it in self.mirror]
            self.emit(ItemUpdated(final))
        for c in reply.calls:
            args = c.arguments if isinstance(c.arguments, str) else json.dumps(c.arguments)
            call = FunctionCall(f"call_{uuid.uuid4().hex[:12]}", c.name, args, id=new_item_id())
            self._add(call)
            self.emit(FunctionCallRequested(rid, call.id, call.call_id, call.name, call.arguments))
        if reply.hold:
            await self._release.wait()
        self._active = None
        done = ResponseDone(rid, "completed", usage=usage)
        self.emit(done)
        handle.set_done(done)


class ScriptedBackend(Backend):
    """Replies are consumed in order, one per `create_response`."""

    def __init__(
        self,
        replies: Sequence[Reply] = (),
        *,
        user_transcripts: Sequence[str] = (),
        server_vad: bool = False,
        server_interrupts: bool = True,
        server_replies: bool = True,
        input_sample_rate: int = 24000,
        output_sample_rate: int = 24000,
        truncation: bool = True,
    ) -> None:
        self.replies = list(replies)
        self.user_transcripts = list(user_transcripts)
        self.capabilities = Capabilities(
            server_vad=server_vad,
            server_interrupts=server_interrupts and server_vad,
            server_replies=server_replies and server_vad,
            truncation=truncation,
            input_sample_rate=input_sample_rate,
            output_sample_rate=output_sample_rate,
        )
        self.sessions: list[ScriptedSession] = []

    @property
    def session(self) -> ScriptedSession:
        if not self.sessions:
            raise SessionClosedError("no session connected yet")
        return self.sessions[-1]

    async def connect(
        self,
        *,
        instructions: str,
        tools: Sequence[FunctionTool],
        conversation: Conversation,
    ) -> ScriptedSession:
        s = ScriptedSession(self)
        s.instructions = instructions
        s.tools = list(tools)
        await s.sync(conversation)
        self.sessions.append(s)
        return s
