"""One client connection: client events -> the cascade session, the cascade's events -> the wire.

The cascade session's conversation (its mirror) is the one source of truth; every
change the client asks for is applied to it with `sync`, computed from the live mirror
so it cannot race the reply that is appending to it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from duplex.agents.audio import AudioFrame
from duplex.agents.backend import (
    AudioDelta,
    BackendError,
    BackendEvent,
    FunctionCallRequested,
    ItemAdded,
    ItemDeleted,
    ItemUpdated,
    ResponseDone,
    ResponseStarted,
    TextDelta,
    UserTranscript,
)
from duplex.agents.conversation import AudioPart, Conversation, FunctionCall, Item, Message
from duplex.agents.vad import VAD
from duplex.backends.cascade import CascadeBackend, CascadeSession

from .audio_formats import InputAudio
from .config import SessionConfig
from .errors import ProtocolError, unsupported
from .items import from_wire, schema_tool, to_wire
from .protocol import Dialect, parse
from .responses import ActiveResponse, ResponseParams, params_from
from .transcripts import transcribed
from .turns import Forward, InputBuffer, Started, Stopped
from .wire import EventHook, Wire, new_id

logger = logging.getLogger(__name__)

#: The service refuses to commit less audio than this.
MIN_COMMIT_MS = 100.0


@dataclass(frozen=True)
class ConnectionOptions:
    model: str = "duplex-cascade"
    instructions: str = "You are a helpful voice assistant. Answer briefly."
    voice: str = "default"
    #: Events queued for a client that does not read before it is dropped.
    queue_size: int = 2048


class RealtimeConnection:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        dialect: Dialect,
        backend: CascadeBackend,
        vad: VAD,
        options: ConnectionOptions,
        *,
        model: str | None = None,
        hook: EventHook | None = None,
    ) -> None:
        self.ws = ws
        self.dialect = dialect
        self.backend = backend
        self.options = options
        self.wire = Wire(ws, dialect, queue_size=options.queue_size, hook=hook)
        self.session_id = new_id("sess")
        self.conversation_id = new_id("conv")
        self.config = SessionConfig(
            dialect,
            model=model or options.model,
            instructions=options.instructions,
            voice=options.voice,
        )
        self.stt_rate = backend.stt.sample_rate
        self.input = InputAudio(self.config.input_format, self.stt_rate)
        self.buffer = InputBuffer(vad, self.stt_rate)
        self.buffer.configure(self.config.turn_detection)
        self._cascade: CascadeSession | None = None
        self.active: ActiveResponse | None = None
        self._speech_item: str | None = None
        #: Committed user items waiting for their transcript, in commit order.
        self.awaiting_transcript: deque[str] = deque()
        self.audio_ms: dict[str, float] = {}
        #: Responses by the cascade's request id, until the cascade reports them done.
        self._requests: dict[str, ActiveResponse] = {}
        #: The response whose reply the cascade is running now.
        self._running: ActiveResponse | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # --- conversation helpers -----------------------------------------------------------
    @property
    def cascade(self) -> CascadeSession:
        assert self._cascade is not None
        return self._cascade

    @property
    def items(self) -> tuple[Item, ...]:
        return self.cascade.conversation.items

    def get_item(self, item_id: str) -> Item | None:
        return next((it for it in self.items if it.id == item_id), None)

    def _previous(self, item_id: str) -> str | None:
        ids = [it.id for it in self.items]
        if item_id not in ids:
            return None
        i = ids.index(item_id)
        return ids[i - 1] if i else None

    async def set_items(self, items: Sequence[Item]) -> None:
        await self.cascade.sync(Conversation(items))

    def _ack(self, item: Item) -> None:
        wire = to_wire(item, self.dialect)
        prev = self._previous(item.id)
        if self.dialect == "beta":
            self.wire.send(
                {"type": "conversation.item.created", "item": wire, "previous_item_id": prev}
            )
            return
        for kind in ("added", "done"):
            self.wire.send(
                {"type": f"conversation.item.{kind}", "item": wire, "previous_item_id": prev}
            )

    # --- lifecycle ----------------------------------------------------------------------
    async def run(self) -> None:
        self._cascade = await self.backend.connect(
            instructions=self.config.instructions, tools=[], conversation=Conversation()
        )
        consumer = asyncio.get_running_loop().create_task(self._consume(), name="realtime-events")
        self.wire.send({"type": "session.created", "session": self.config.echo(self.session_id)})
        if self.dialect == "beta":
            conv = {"id": self.conversation_id, "object": "realtime.conversation"}
            self.wire.send({"type": "conversation.created", "conversation": conv})
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.TEXT:
                    await self._handle(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    self.wire.error(
                        ProtocolError(
                            "invalid_json", "Binary frames are not accepted; send JSON text."
                        )
                    )
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._cascade.aclose()
            await asyncio.gather(consumer, return_exceptions=True)
            await self.wire.aclose()

    async def _handle(self, raw: str) -> None:
        event_id: str | None = None
        try:
            event = parse(raw, self.dialect)
            event_id = event.get("event_id")
            handler = getattr(self, "_on_" + event["type"].replace(".", "_"))
            await handler(event)
        except ProtocolError as e:
            self.wire.error(e, event_id)
        except Exception as e:  # a bug must not end the call: report it, keep the session
            logger.exception("realtime event failed")
            self.wire.error(
                ProtocolError("server_error", f"{type(e).__name__}: {e}", type="server_error"),
                event_id,
            )

    # --- session ------------------------------------------------------------------------
    async def _on_session_update(self, ev: dict[str, Any]) -> None:
        old_format = self.config.input_format
        self.config.update(ev["session"])
        cascade = self.cascade
        await cascade.update_instructions(self.config.instructions)
        await cascade.update_tools([schema_tool(t) for t in self.config.tools])
        if self.config.input_format != old_format:
            self.input = InputAudio(self.config.input_format, self.stt_rate)
        self.buffer.configure(self.config.turn_detection)
        self.wire.send({"type": "session.updated", "session": self.config.echo(self.session_id)})

    async def _on_transcription_session_update(self, ev: dict[str, Any]) -> None:
        raise unsupported("A transcription-only session", param="type")

    async def _on_output_audio_buffer_clear(self, ev: dict[str, Any]) -> None:
        raise unsupported("output_audio_buffer.clear (WebRTC/SIP only)", param="type")

    # --- input audio --------------------------------------------------------------------
    async def _on_input_audio_buffer_append(self, ev: dict[str, Any]) -> None:
        frame = self.input.decode(ev["audio"])
        if frame is None:
            return
        for action in self.buffer.push(frame):
            if isinstance(action, Forward):
                for f in action.frames:
                    await self._forward(f)
            elif isinstance(action, Started):
                await self._speech_started(action.audio_start_ms)
            elif isinstance(action, Stopped):
                await self._speech_stopped(action.audio_end_ms)

    async def _forward(self, frame: AudioFrame) -> None:
        await self.cascade.push_audio(frame)

    async def _speech_started(self, at_ms: int) -> None:
        self._speech_item = new_id("item")
        self.wire.send(
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": at_ms,
                "item_id": self._speech_item,
            }
        )
        td = self.config.turn_detection
        if td is not None and td.interrupt_response and self.active is not None:
            await self._cancel(self.active, "turn_detected")

    async def _speech_stopped(self, at_ms: int) -> None:
        item_id = self._speech_item or new_id("item")
        self._speech_item = None
        self.wire.send(
            {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": at_ms, "item_id": item_id}
        )
        await self._commit(item_id)
        td = self.config.turn_detection
        if td is not None and td.create_response and self.active is None:
            await self._start_response(params_from({}, self.config, None))

    async def _on_input_audio_buffer_commit(self, ev: dict[str, Any]) -> None:
        if self.buffer.buffered_ms < MIN_COMMIT_MS:
            raise ProtocolError(
                "input_audio_buffer_commit_empty",
                f"Error committing input audio buffer: buffer too small. Expected at least "
                f"{MIN_COMMIT_MS:.0f}ms of audio, but buffer only has "
                f"{self.buffer.buffered_ms:.2f}ms of audio.",
            )
        item_id = self._speech_item or new_id("item")
        self._speech_item = None
        await self._commit(item_id)

    async def _commit(self, item_id: str) -> None:
        """End the caller's turn: a user item now, its transcript when the STT has it."""
        duration = self.buffer.buffered_ms
        self.buffer.committed()
        await self.cascade.commit_audio()
        user = Message(
            role="user",
            content=(AudioPart(transcript="", duration_ms=duration, sample_rate=self.stt_rate),),
            id=item_id,
        )
        await self.set_items([*self.items, user])
        self.awaiting_transcript.append(item_id)
        self.wire.send(
            {
                "type": "input_audio_buffer.committed",
                "item_id": item_id,
                "previous_item_id": self._previous(item_id),
            }
        )
        self._ack(user)

    async def _on_input_audio_buffer_clear(self, ev: dict[str, Any]) -> None:
        await self.cascade.clear_audio()
        self.buffer.clear()
        self._speech_item = None
        self.wire.send({"type": "input_audio_buffer.cleared"})

    # --- conversation items -------------------------------------------------------------
    async def _on_conversation_item_create(self, ev: dict[str, Any]) -> None:
        item = from_wire(ev["item"], self.dialect)
        if self.get_item(item.id) is not None:
            raise ProtocolError(
                "item_already_exists", f"Item with id '{item.id}' already exists.", param="item.id"
            )
        items = list(self.items)
        prev = ev.get("previous_item_id")
        if prev is None:
            items.append(item)
        elif prev == "root":
            items.insert(0, item)
        else:
            ids = [it.id for it in items]
            if prev not in ids:
                raise ProtocolError(
                    "previous_item_not_found",
                    f"Previous item with id '{prev}' not found.",
                    param="previous_item_id",
                )
            items.insert(ids.index(prev) + 1, item)
        await self.set_items(items)
        self._ack(item)

    async def _on_conversation_item_retrieve(self, ev: dict[str, Any]) -> None:
        item = self.get_item(ev["item_id"])
        if item is None:
            raise ProtocolError(
                "item_retrieve_invalid_item_id",
                f"Item with item_id not found: {ev['item_id']}",
                param="item_id",
            )
        self.wire.send({"type": "conversation.item.retrieved", "item": to_wire(item, self.dialect)})

    async def _on_conversation_item_delete(self, ev: dict[str, Any]) -> None:
        item_id = ev["item_id"]
        if self.get_item(item_id) is None:
            raise ProtocolError(
                "item_delete_invalid_item_id",
                f"Item with item_id not found: {item_id}",
                param="item_id",
            )
        await self.set_items([it for it in self.items if it.id != item_id])
        self.wire.send({"type": "conversation.item.deleted", "item_id": item_id})

    async def _on_conversation_item_truncate(self, ev: dict[str, Any]) -> None:
        item_id, end_ms = ev["item_id"], int(ev["audio_end_ms"])
        item = self.get_item(item_id)
        if item is None:
            raise ProtocolError(
                "item_truncate_invalid_item_id",
                f"Item with item_id not found: {item_id}",
                param="item_id",
            )
        if not (
            isinstance(item, Message)
            and item.role == "assistant"
            and any(isinstance(p, AudioPart) for p in item.content)
        ):
            raise ProtocolError(
                "invalid_value",
                "Only assistant messages with audio can be truncated.",
                param="item_id",
            )
        if ev["content_index"] != 0:
            raise ProtocolError(
                "invalid_value",
                "Invalid content_index: the audio is part 0.",
                param="content_index",
            )
        have = self.audio_ms.get(item_id, item.audio_ms)
        if end_ms < 0 or end_ms > have + 1.0:
            raise ProtocolError(
                "invalid_value",
                f"Audio content of {have:.0f}ms is shorter than {end_ms}ms.",
                param="audio_end_ms",
            )
        active = self.active
        if active is not None and active.owns(item_id):
            await self._cancel(active, "client_cancelled")
        await self.cascade.truncate(item_id, end_ms)
        self.audio_ms[item_id] = float(end_ms)
        self.wire.send(
            {
                "type": "conversation.item.truncated",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": end_ms,
            }
        )

    # --- responses ----------------------------------------------------------------------
    async def _on_response_create(self, ev: dict[str, Any]) -> None:
        if self.active is not None:
            raise ProtocolError(
                "conversation_already_has_active_response",
                f"Conversation already has an active response in progress: {self.active.id}. "
                "Wait until the response is finished before creating a new one.",
            )
        await self._start_response(
            params_from(ev.get("response") or {}, self.config, ev.get("event_id"))
        )

    async def _start_response(self, params: ResponseParams) -> None:
        active = ActiveResponse(params, self.wire, self.conversation_id, self.audio_ms)
        self.active = active
        active.announce()  # at once, like the service: the cascade may still be transcribing
        active.handle = await self.cascade.create_response(
            instructions=params.instructions, tool_choice=params.tool_choice
        )
        self._requests[active.handle.request_id] = active

    async def _on_response_cancel(self, ev: dict[str, Any]) -> None:
        rid = ev.get("response_id")
        active = self.active
        if active is None or (rid and rid != active.id):
            raise ProtocolError(
                "response_cancel_not_active", "Cancellation failed: no active response found"
            )
        await self._cancel(active, "client_cancelled")

    async def _cancel(self, active: ActiveResponse, reason: str) -> None:
        """End the response on the wire now; the cascade stops its stages in the background.

        A TTS may take a moment to stop mid-sentence; clients must not wait for that (the
        service answers ``response.done`` at once, and livekit-agents relies on it).
        """
        if active.finished:
            return
        if active.cancel_reason is None:
            active.cancel_reason = reason
        await self._finish(active, ResponseDone(active.id, "cancelled", reason=reason))
        if active.backend_id is not None:
            self._background(self.cascade.cancel_response())
        # else: cancelled when the cascade reports it started (see ResponseStarted)

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- cascade events -> wire ---------------------------------------------------------
    async def _consume(self) -> None:
        async for ev in self.cascade.events():
            try:
                await self._on_backend(ev)
            except Exception:
                logger.exception("realtime: handling %s failed", type(ev).__name__)

    async def _on_backend(self, ev: BackendEvent) -> None:
        # The cascade runs one reply at a time: its item and delta events belong to the one
        # that started last. A response already ended on the wire (cancelled) ignores them.
        resp = self._running
        live = resp if resp is not None and not resp.finished else None
        if isinstance(ev, UserTranscript):
            if ev.final:
                await transcribed(self, ev)
        elif isinstance(ev, ResponseStarted):
            started = self._requests.get(ev.request_id or "")
            if started is not None:
                started.backend_id = ev.response_id
                self._running = started
                if started.finished:  # cancelled before the cascade got to it
                    self._background(self.cascade.cancel_response())
        elif isinstance(ev, ItemAdded):
            if live is None or (isinstance(ev.item, Message) and ev.item.role == "user"):
                return
            previous = self._previous(ev.item.id)
            if isinstance(ev.item, Message):
                live.message_added(ev.item, previous, self.backend.tts.sample_rate)
            elif isinstance(ev.item, FunctionCall):
                live.call_added(ev.item, previous)
        elif isinstance(ev, TextDelta):
            if live is not None:
                live.text_delta(ev.item_id, ev.text)
        elif isinstance(ev, AudioDelta):
            if live is not None:
                live.audio_delta(ev.item_id, ev.frame)
        elif isinstance(ev, ItemUpdated):
            if live is not None and isinstance(ev.item, Message) and live.owns(ev.item.id):
                live.message_done(ev.item, self._previous(ev.item.id), cancelled=False)
        elif isinstance(ev, FunctionCallRequested):
            if live is not None:
                live.call_requested(ev, self._previous(ev.item_id))
        elif isinstance(ev, ItemDeleted):
            if live is not None and live.owns(ev.item_id) and not live.params.out_of_band:
                self.wire.send({"type": "conversation.item.deleted", "item_id": ev.item_id})
        elif isinstance(ev, ResponseDone):
            await self._response_done(ev)
        elif isinstance(ev, BackendError):
            self.wire.error(ProtocolError(ev.code, ev.message, type="server_error"))

    async def _response_done(self, ev: ResponseDone) -> None:
        if self._running is not None and self._running.backend_id == ev.response_id:
            self._running = None
        for request_id, resp in list(self._requests.items()):
            if resp.backend_id == ev.response_id:
                del self._requests[request_id]
                await self._finish(resp, ev)

    async def _finish(self, active: ActiveResponse, ev: ResponseDone) -> None:
        if active.finished:
            return
        if self.active is active:
            self.active = None
        active.done(ev)
        if active.params.out_of_band:
            drop = {o.item_id for o in active.outputs}
            await self.set_items([it for it in self.items if it.id not in drop])
