"""Routes backend events: to the conversation, to the `Reply` they belong to, to playout.

The router changes a reply only through its verbs; which reply an event belongs
to comes from its response id (audio, text, tool calls) or, for an assistant item
added by the server, from the reply that is live.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from .backend import (
    AudioDelta,
    BackendError,
    BackendEvent,
    BackendSession,
    FunctionCallRequested,
    ItemAdded,
    ItemDeleted,
    ItemUpdated,
    RateLimits,
    Reconnected,
    ResponseDone,
    ResponseStarted,
    SpeechStarted,
    SpeechStopped,
    TextDelta,
    UserTranscript,
)
from .backend import Reconnecting as BackendReconnecting
from .conversation import FunctionCall, Message
from .events import ConversationItemAdded, ToolCalled, UserTranscribed
from .events import Reconnected as SessionReconnected
from .events import Reconnecting as SessionReconnecting

if TYPE_CHECKING:
    from .interruption import PendingInterruption
    from .session import AgentSession

logger = logging.getLogger("duplex.agents.session")


class BackendRouter:
    def __init__(self, session: AgentSession) -> None:
        self.s = session
        #: Input position where the server's audio clock restarted (after a reconnect).
        self._server_audio_offset_ms = 0.0

    async def run(self, backend: BackendSession) -> None:
        s = self.s
        backend.deliver_nowait(self.handle_nowait)
        try:
            async for ev in backend.events():
                try:
                    await self.handle(ev)
                except Exception:
                    logger.exception("error handling backend event %s", type(ev).__name__)
        except Exception as e:
            logger.exception("backend event stream failed")
            s.report_error("backend_stream_failed", str(e), False)
        finally:
            backend.deliver_nowait(None)
        if not s.closing:
            s.spawn(s.aclose("backend closed"), "close")

    def handle_nowait(self, ev: BackendEvent) -> bool:
        """Reply audio straight from the backend's reader (its handling never awaits);
        every other event goes through `run`."""
        if type(ev) is not AudioDelta:
            return False
        try:
            self._audio(ev)
        except Exception:
            logger.exception("error handling backend event AudioDelta")
        return True

    def capture_time(self, server_ms: float | None) -> float:
        """When the caller audio at a server VAD position was captured (else: now)."""
        inp = self.s.input
        if server_ms is None or inp is None:
            return time.monotonic()
        return inp.capture_time(self._server_audio_offset_ms + server_ms)

    async def handle(self, ev: BackendEvent) -> None:
        s = self.s
        if isinstance(ev, AudioDelta):
            self._audio(ev)
        elif isinstance(ev, TextDelta):
            reply = s.replies.get(ev.response_id)
            if reply is not None and not reply.interrupted:
                s.emit(s.captions.delta(ev.item_id, ev.text))
        elif isinstance(ev, ResponseStarted):
            await self._started(ev)
        elif isinstance(ev, ResponseDone):
            self._done(ev)
        elif isinstance(ev, FunctionCallRequested):
            call = FunctionCall(ev.call_id, ev.name, ev.arguments, id=ev.item_id)
            if ev.item_id not in s.conversation:
                s.append(call)
            if s.tools.submit(ev.response_id, call) is not None:
                s.emit(ToolCalled(call))
            reply = s.replies.get(ev.response_id)
            batch = s.tools.find(ev.response_id)
            if reply is not None and batch is not None:
                reply.attach_tools(batch)
        elif isinstance(ev, (ItemAdded, ItemUpdated, ItemDeleted)):
            self._item(ev)
        elif isinstance(ev, UserTranscript):
            if ev.error:
                s.report_error("transcription_failed", ev.error, True)
            s.barge_in.transcript(ev.text, ev.final)
            s.emit(UserTranscribed(ev.item_id, ev.text, ev.final))
        elif isinstance(ev, SpeechStarted):
            s.set_user_state("speaking")
            await s.barge_in.speech_started(self.capture_time(ev.audio_start_ms), source="server")
        elif isinstance(ev, SpeechStopped):
            self._speech_stopped(ev)
        elif isinstance(ev, BackendError):
            s.report_error(ev.code, ev.message, ev.recoverable, ev.param, ev.event_id)
        elif isinstance(ev, BackendReconnecting):
            logger.info("backend: %s", ev)
            s.emit(SessionReconnecting(ev.planned, ev.reason))
        elif isinstance(ev, Reconnected):
            # The new connection counts its audio from zero again.
            if s.input is not None:
                self._server_audio_offset_ms = s.input.position_ms
            logger.info("backend: %s", ev)
            s.emit(SessionReconnected(ev.planned, ev.downtime_ms, ev.attempt))
        elif isinstance(ev, RateLimits):
            logger.info("backend: %s", ev)

    def _speech_stopped(self, ev: SpeechStopped) -> None:
        s = self.s
        s.new_user_turn()
        end_at = self.capture_time(ev.audio_end_ms)
        s.replies.next_speech_end_at = end_at
        if s.vad is None:
            s.set_user_state("listening")
        pending = s.barge_in.pending
        s.barge_in.speech_ended()
        if not s.server_replies:
            s.spawn(self._server_turn_reply(end_at, pending), "server-turn-reply")

    async def _server_turn_reply(self, end_at: float, held: PendingInterruption | None) -> None:
        s = self.s
        if held is not None and not await s.barge_in.turn_is_real(held):
            return
        await s.reply_for_turn(speech_end_at=end_at)

    async def _started(self, ev: ResponseStarted) -> None:
        s = self.s
        reply = s.replies.started(ev.response_id, ev.request_id)
        if reply.cancel_on_start:
            s.spawn(s.settle(reply, cancel=True), "settle")
            return
        if reply.request_id is None:
            await s.barge_in.server_reply_started()
        if s.agent_state != "speaking":
            s.set_agent_state("thinking")

    def _audio(self, ev: AudioDelta) -> None:
        s = self.s
        reply = s.replies.get(ev.response_id) or s.replies.started(ev.response_id, None)
        if reply.interrupted or s.playout is None:
            return  # audio of a reply the caller already cut off
        reply.audio(ev.item_id, ev.frame.duration_ms)
        s.playout.push(ev.item_id, ev.frame)

    def _done(self, ev: ResponseDone) -> None:
        s = self.s
        reply = s.replies.finished(ev)
        if s.playout is not None and not reply.interrupted:
            s.playout.end_of_response()
        batch = s.tools.find(ev.response_id)
        if batch is not None and batch.calls:
            batch.response_done = True
            # A reply that only called tools said nothing: the caller still waits from speech end.
            carry = reply.speech_end_at if reply.first_played_at is None else None
            s.spawn(s.follow_up_tools(ev.response_id, s.user_turns, carry), "tool-follow-up")
        else:
            s.tools.pop_batch(ev.response_id)
        if ev.status == "failed":
            s.report_error("response_failed", ev.error or "response failed", True)
        if s.playout is None or not s.playout.active:
            s.on_idle()
        s.maybe_metrics(reply)

    def _item(self, ev: ItemAdded | ItemUpdated | ItemDeleted) -> None:
        s = self.s
        change = s.conversation.apply(ev)
        if change is None or isinstance(ev, ItemDeleted):
            return
        item = ev.item
        assistant = isinstance(item, Message) and item.role == "assistant"
        if change == "added":
            s.emit(ConversationItemAdded(item))
            reply = s.replies.current
            claimed = assistant and reply is not None and reply.live and reply.add_item(item.id)
            if claimed and reply is not None and reply.interrupted:
                s.captions.interrupted([item.id])
        if isinstance(item, Message) and assistant and item.complete:
            caption = s.captions.final(item)
            if caption is not None:
                s.emit(caption)
