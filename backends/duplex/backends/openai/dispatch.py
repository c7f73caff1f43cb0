"""Server events -> mirror changes and `BackendEvent`s.

Every event type of the GA and beta unions is either handled here or listed in
`IGNORED` with the reason (docs/backends/openai.md has the table). Beta names are
normalised to GA first. Parsing is defensive: numbers are bounded before use, and a
handler that trips over a malformed event (whatever it raises) costs that event
only: one `BackendError` (``malformed_event``), a warning once per type, and the
reader carries on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from duplex.agents.backend import (
    BackendError,
    RateLimits,
    SpeechStarted,
    SpeechStopped,
    UserTranscript,
)
from duplex.agents.conversation import AudioPart, ContentPart, FunctionCallOutput, Message
from duplex.agents.errors import BackendErrorException, ResponseActiveError

from .dialect import normalize_type
from .items import from_wire, server_item_id, truncated_item
from .options import FATAL_CODES, SemanticVAD, ServerVAD
from .state import SessionState, log
from .stream_events import RESPONSE_HANDLERS, ResponseEvents

#: Event types duplex receives and deliberately does nothing with, and why.
IGNORED: dict[str, str] = {
    "conversation.created": "the conversation is implicit; one per session",
    "transcription_session.updated": "duplex never opens a transcription-only session",
    "conversation.item.done": "items are finalised from response.output_item.done",
    "conversation.item.retrieved": "duplex never sends conversation.item.retrieve",
    "conversation.item.input_audio_transcription.segment": "diarization segments; the "
    "completed transcript carries the text",
    "input_audio_buffer.timeout_triggered": "idle timeout; the server commits and replies itself",
    "input_audio_buffer.dtmf_event_received": "DTMF reaches duplex through the telephony transport",
    "response.content_part.done": "content is finalised from response.output_item.done",
    "response.output_audio.done": "end of audio is implied by response.output_item.done",
    "output_audio_buffer.started": "WebRTC/SIP only; duplex plays audio itself",
    "output_audio_buffer.stopped": "WebRTC/SIP only",
    "output_audio_buffer.cleared": "WebRTC/SIP only",
    "mcp_list_tools.in_progress": "server-side MCP tools are not configured by duplex",
    "mcp_list_tools.completed": "server-side MCP tools are not configured by duplex",
    "mcp_list_tools.failed": "server-side MCP tools are not configured by duplex",
    "response.mcp_call_arguments.delta": "server-side MCP",
    "response.mcp_call_arguments.done": "server-side MCP",
    "response.mcp_call.in_progress": "server-side MCP",
    "response.mcp_call.completed": "server-side MCP",
    "response.mcp_call.failed": "server-side MCP",
}


#: Longest time value (ms) taken from a server event (~115 days); larger ones are malformed.
MAX_MS = 1e10
#: Longest caller transcript kept while it streams.
MAX_TRANSCRIPT_CHARS = 100_000


def bounded_ms(value: Any) -> float | None:
    """A finite, non-negative millisecond count within `MAX_MS`, else None (never raises)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, int):
        return float(value) if 0 <= value <= MAX_MS else None
    return value if math.isfinite(value) and 0.0 <= value <= MAX_MS else None


def _text(value: Any, limit: int = 500) -> str | None:
    return value[:limit] if isinstance(value, str) else None


#: Server event type (GA names; beta names are normalised first) -> handler method.
CONVERSATION_HANDLERS: dict[str, str] = {
    "session.created": "_session",
    "session.updated": "_session_updated",
    "input_audio_buffer.speech_started": "_speech_started",
    "input_audio_buffer.speech_stopped": "_speech_stopped",
    "input_audio_buffer.committed": "_committed",
    "input_audio_buffer.cleared": "_cleared",
    "conversation.item.added": "_item_added",
    "conversation.item.created": "_item_added",
    "conversation.item.deleted": "_item_deleted",
    "conversation.item.truncated": "_item_truncated",
    "conversation.item.input_audio_transcription.delta": "_transcript_delta",
    "conversation.item.input_audio_transcription.completed": "_transcript_done",
    "conversation.item.input_audio_transcription.failed": "_transcript_failed",
    "rate_limits.updated": "_rate_limits",
    "error": "_error",
}

#: Every server event type handled (GA names; beta names are normalised first).
HANDLERS: dict[str, str] = {**CONVERSATION_HANDLERS, **RESPONSE_HANDLERS}

#: Deltas of a streaming reply: they change nothing a `SessionState.wait_until` predicate
#: reads (only a reply's last-event time, which the watchdog re-reads when its deadline
#: comes), so they wake no waiter. Waking the watchdog and the request sender on every
#: 50 ms audio delta cost two task switches and a timer per delta per session.
STREAMING: frozenset[str] = frozenset(
    {
        "response.output_audio.delta",
        "response.output_audio_transcript.delta",
        "response.output_text.delta",
        "response.function_call_arguments.delta",
    }
)


class Dispatcher:
    def __init__(self, st: SessionState, *, wake_sender: Callable[[], None]) -> None:
        self.st = st
        self._wake_sender = wake_sender
        self.out = ResponseEvents(st, wake_sender=wake_sender)
        self._table: dict[str, Callable[[dict[str, Any]], None]] = {
            **{t: getattr(self, name) for t, name in CONVERSATION_HANDLERS.items()},
            **{t: getattr(self.out, name) for t, name in RESPONSE_HANDLERS.items()},
        }
        self.session_info: dict[str, Any] = {}

    def dispatch(self, raw_type: str, event: dict[str, Any]) -> None:
        st = self.st
        etype = normalize_type(raw_type)
        handler = self._table.get(etype)
        if handler is None:
            if etype not in IGNORED:
                st.log_once(f"unknown:{etype}", "realtime: skipping unknown server event %r", etype)
            return
        try:
            handler(event)
        except Exception as e:  # one bad event costs that event, never the reader
            st.log_once(
                f"malformed:{etype}",
                "realtime: skipping malformed %r event (%s: %.200s)",
                etype,
                type(e).__name__,
                str(e),
            )
            self.malformed(f"a malformed {etype!r} event ({type(e).__name__})")
        finally:
            if etype not in STREAMING:
                st.changed()

    def malformed(self, what: str) -> None:
        """Report one unusable server event (the session stays up)."""
        self.st.emit(BackendError("malformed_event", f"realtime: skipped {what}", True))

    # session -------------------------------------------------------------------------------
    def _session(self, ev: dict[str, Any]) -> None:
        self.session_info = dict(ev.get("session") or {})

    def _session_updated(self, ev: dict[str, Any]) -> None:
        self.session_info = dict(ev.get("session") or {})
        self.st.ops.resolve("session", "")

    # input audio ---------------------------------------------------------------------------
    def _interrupts(self) -> bool:
        td = self.st.opts.turn_detection
        return isinstance(td, (ServerVAD, SemanticVAD)) and td.interrupt_response

    def _speech_started(self, ev: dict[str, Any]) -> None:
        st = self.st
        st.user_speaking = True
        st.speech_start_ms = bounded_ms(ev.get("audio_start_ms"))
        if self._interrupts():
            # The server cancels the active response itself; a response.cancel from us
            # now would only earn a response_cancel_not_active error.
            for r in st.responses.active.values():
                r.server_cancelling = True
        st.emit(SpeechStarted(st.speech_start_ms, _text(ev.get("item_id"), 128)))

    def _speech_stopped(self, ev: dict[str, Any]) -> None:
        st = self.st
        st.user_speaking = False
        end_ms = bounded_ms(ev.get("audio_end_ms"))
        item_id = _text(ev.get("item_id"), 128)
        if item_id and end_ms is not None and st.speech_start_ms is not None:
            turn = st.user_turn(item_id)
            prefix = getattr(st.opts.turn_detection, "prefix_padding_ms", 0)
            turn.audio_ms = end_ms - max(0.0, st.speech_start_ms - prefix)
        st.emit(SpeechStopped(end_ms, item_id))

    def _committed(self, ev: dict[str, Any]) -> None:
        st = self.st
        item_id = server_item_id(ev.get("item_id"))
        turn = st.user_turn(item_id)
        if not turn.audio_ms:
            turn.audio_ms = st.buffer_ms
        turn.done = st.opts.input_transcription is None
        if st.server_replies:
            st.reply_due_at = time.monotonic()  # the server answers it: not a quiet moment
        st.buffer_ms = 0.0
        st.user_speaking = False
        if item_id not in st.mirror:
            msg = Message(
                role="user",
                content=(AudioPart(duration_ms=turn.audio_ms),),
                id=item_id,
                complete=turn.done,
            )
            prev = ev.get("previous_item_id")
            st.add_item(msg, prev)
        if turn.done:
            st.user_turns.pop(item_id, None)  # no transcript will come
        st.ops.resolve("commit", "")

    def _cleared(self, ev: dict[str, Any]) -> None:
        self.st.buffer_ms = 0.0

    # conversation items ---------------------------------------------------------------------
    def _item_added(self, ev: dict[str, Any]) -> None:
        st = self.st
        wire = ev["item"]
        item_id = server_item_id(wire.get("id"))
        prev = ev.get("previous_item_id")
        pending = st.ops.peek("create", item_id)
        if pending is not None:
            local_item, local_prev = pending.payload
            if isinstance(local_item, FunctionCallOutput) and local_item.call_id in st.open_calls:
                st.outputs_sent.add(local_item.call_id)  # open until the follow-up reply starts
            after = local_prev if local_prev in st.mirror else prev
            st.mirror.insert(local_item, after, first=after is None)
            st.ops.resolve("create", item_id)
            return
        if item_id in st.mirror:
            return  # already known from committed / output_item.added
        item = from_wire(wire)
        if item is None:
            st.log_once(f"item:{wire.get('type')}", "realtime: ignoring %s item", wire.get("type"))
            return
        if (
            isinstance(item, Message)
            and item.role == "user"
            and any(isinstance(p, AudioPart) for p in item.content)
        ):
            turn = st.user_turn(item_id)
            turn.done = st.opts.input_transcription is None
            item = replace(
                item,
                content=tuple(
                    replace(p, duration_ms=turn.audio_ms) if isinstance(p, AudioPart) else p
                    for p in item.content
                ),
                complete=turn.done,
            )
        st.add_item(item, prev)

    def _item_deleted(self, ev: dict[str, Any]) -> None:
        st = self.st
        item_id = str(ev["item_id"])
        pending = st.ops.resolve("delete", item_id)
        if pending is not None and not pending.payload:
            st.mirror.remove(item_id)  # the session asked for it; it already removed the item
        else:
            st.delete_item(item_id)  # the server (or a zero-ms truncate) removed it

    def _item_truncated(self, ev: dict[str, Any]) -> None:
        st = self.st
        item_id = str(ev["item_id"])
        end_ms = bounded_ms(ev.get("audio_end_ms"))
        if end_ms is None:
            raise ValueError("audio_end_ms is not a bounded number of milliseconds")
        item = st.mirror.get(item_id)
        if isinstance(item, Message):
            st.update_item(truncated_item(item, end_ms))
        st.ops.resolve("truncate", item_id)

    # caller transcripts -------------------------------------------------------------------
    def _transcript_delta(self, ev: dict[str, Any]) -> None:
        st = self.st
        item_id = str(ev["item_id"])
        turn = st.user_turn(item_id)
        delta = ev.get("delta")
        if not isinstance(delta, str):
            raise TypeError("transcription delta is not a string")
        turn.partial = (turn.partial + delta)[:MAX_TRANSCRIPT_CHARS]
        st.emit(UserTranscript(item_id, turn.partial, final=False))

    def _finish_user_item(self, item_id: str, transcript: str) -> None:
        st = self.st
        item = st.mirror.get(item_id)
        if isinstance(item, Message):
            parts: list[ContentPart] = []
            for p in item.content:
                parts.append(replace(p, transcript=transcript) if isinstance(p, AudioPart) else p)
            st.update_item(replace(item, content=tuple(parts), complete=True))
        turn = st.user_turns.pop(item_id, None)
        if turn is not None:
            turn.done = True

    def _transcript_done(self, ev: dict[str, Any]) -> None:
        item_id = str(ev["item_id"])
        text = (
            (_text(ev.get("transcript"), MAX_TRANSCRIPT_CHARS) or "")
            if ev.get("transcript")
            else ""
        )
        self._finish_user_item(item_id, text)
        self.st.emit(UserTranscript(item_id, text, final=True))

    def _transcript_failed(self, ev: dict[str, Any]) -> None:
        item_id = str(ev["item_id"])
        turn = self.st.user_turns.get(item_id)
        partial = turn.partial if turn else ""
        err = ev.get("error")
        err = err if isinstance(err, dict) else {}
        message = _text(err.get("message")) or _text(err.get("code")) or "transcription failed"
        self._finish_user_item(item_id, partial)
        self.st.emit(UserTranscript(item_id, partial, final=True, error=message))

    # misc ---------------------------------------------------------------------------------
    def _rate_limits(self, ev: dict[str, Any]) -> None:
        limits = tuple(dict(x) for x in ev.get("rate_limits") or () if isinstance(x, dict))
        self.st.emit(RateLimits(limits))

    def _error(self, ev: dict[str, Any]) -> None:
        st = self.st
        err = ev.get("error")
        if not isinstance(err, dict):
            err = {"message": err} if isinstance(err, str) else {}
        code = _text(err.get("code"), 64) or _text(err.get("type"), 64) or "error"
        message = _text(err.get("message"), 1000) or code
        event_id = _text(err.get("event_id"), 128)
        param = _text(err.get("param"), 200)
        if code in st.errors_seen or len(st.errors_seen) < 256:
            st.errors_seen[code] += 1
        exc = BackendErrorException(
            message,
            code=code,
            recoverable=code not in FATAL_CODES,
            param=param,
            event_id=event_id,
        )
        if isinstance(event_id, str):
            if st.ops.fail(event_id, exc) is not None:
                return
            handle = st.responses.by_request(event_id)
            if handle is not None:
                self._response_refused(handle, code, message)
                return
            if event_id in st.responses.matched:
                # Without a metadata echo a server-VAD reply that raced this request was
                # matched to it (FIFO); the request is answered by that reply.
                log.info(
                    "realtime: request %s answered by server response %s (%s)",
                    event_id,
                    st.responses.matched[event_id],
                    code,
                )
                return
        if code == "response_cancel_not_active":
            # Lost a race with the response ending; nothing to tell the session.
            log.debug("realtime: %s", message)
            return
        if code in FATAL_CODES:
            st.fatal = (code, message)
        st.emit(BackendError(code, message, code not in FATAL_CODES, param, event_id))

    def abort(self, error: Exception) -> None:
        """An unplanned drop: fail what waited for the server, close what was streaming."""
        st = self.st
        st.ops.fail_all(error)
        for h in (*st.responses.sent, *st.responses.queued):
            h.fail(error)
        st.responses.sent.clear()
        st.responses.queued.clear()
        self.out.abort(error)
        for turn in list(st.user_turns.values()):
            item = st.mirror.get(turn.item_id)
            if not turn.done and isinstance(item, Message):
                st.update_item(replace(item, complete=True))
        st.user_turns.clear()
        st.user_speaking = False
        st.buffer_ms = 0.0

    def _response_refused(self, handle: Any, code: str, message: str) -> None:
        st = self.st
        st.responses.forget_sent(handle)
        policy = st.opts.response_policy
        if code == "conversation_already_has_active_response":
            if policy == "cancel_new":
                handle.fail(ResponseActiveError(f"a response is already active: {message}"))
            elif handle.retries < 3:
                handle.retries += 1
                if policy == "cancel_existing":
                    for r in st.responses.active.values():
                        if not r.stopping:
                            r.cancel_sent = True
                            st.send_soon({"type": "response.cancel", "response_id": r.id})
                st.responses.queued.appendleft(handle)
            else:
                handle.fail(BackendErrorException(message, code=code))
        else:
            handle.fail(BackendErrorException(message, code=code))
        self._wake_sender()
