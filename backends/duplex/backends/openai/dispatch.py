"""Server events -> mirror changes and `BackendEvent`s.

Every event type of the GA and beta unions is either handled here or listed in
`IGNORED` with the reason (docs/backends/openai.md has the table). Beta names are
normalised to GA first. A handler that trips over a malformed event logs once per
type and the event is skipped; the session carries on.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from duplex.agents import g711
from duplex.agents.audio import AudioFrame
from duplex.agents.backend import (
    AudioDelta,
    BackendError,
    FunctionCallRequested,
    RateLimits,
    ResponseDone,
    ResponseStarted,
    SpeechStarted,
    SpeechStopped,
    TextDelta,
    UserTranscript,
)
from duplex.agents.conversation import AudioPart, ContentPart, FunctionCall, Message, TextPart
from duplex.agents.errors import BackendErrorException, ResponseActiveError

from .dialect import normalize_type
from .items import from_wire
from .metrics import ResponseMetrics, usage_from_wire
from .options import FATAL_CODES, SemanticVAD, ServerVAD
from .responses import ActiveResponse, ItemStream
from .state import SessionState, UserTurn

#: Event types duplex receives and deliberately does nothing with, and why.
IGNORED: dict[str, str] = {
    "conversation.created": "the conversation is implicit; one per session",
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


class Dispatcher:
    def __init__(self, st: SessionState, *, wake_sender: Callable[[], None]) -> None:
        self.st = st
        self._wake_sender = wake_sender
        self._table: dict[str, Callable[[dict[str, Any]], None]] = {
            "session.created": self._session,
            "session.updated": self._session_updated,
            "input_audio_buffer.speech_started": self._speech_started,
            "input_audio_buffer.speech_stopped": self._speech_stopped,
            "input_audio_buffer.committed": self._committed,
            "input_audio_buffer.cleared": self._cleared,
            "conversation.item.added": self._item_added,
            "conversation.item.created": self._item_added,
            "conversation.item.deleted": self._item_deleted,
            "conversation.item.truncated": self._item_truncated,
            "conversation.item.input_audio_transcription.delta": self._transcript_delta,
            "conversation.item.input_audio_transcription.completed": self._transcript_done,
            "conversation.item.input_audio_transcription.failed": self._transcript_failed,
            "response.created": self._response_created,
            "response.output_item.added": self._output_item_added,
            "response.content_part.added": self._content_part_added,
            "response.output_audio.delta": self._audio_delta,
            "response.output_audio_transcript.delta": self._transcript_out_delta,
            "response.output_audio_transcript.done": self._transcript_out_done,
            "response.output_text.delta": self._text_delta,
            "response.output_text.done": self._text_done,
            "response.function_call_arguments.delta": self._args_delta,
            "response.function_call_arguments.done": self._args_done,
            "response.output_item.done": self._output_item_done,
            "response.done": self._response_done,
            "rate_limits.updated": self._rate_limits,
            "error": self._error,
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
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            st.log_once(
                f"malformed:{etype}",
                "realtime: skipping malformed %r event (%s: %s)",
                etype,
                type(e).__name__,
                e,
            )
        finally:
            st.changed()

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
        start = ev.get("audio_start_ms")
        st.speech_start_ms = float(start) if isinstance(start, (int, float)) else None
        if self._interrupts():
            # The server cancels the active response itself; a response.cancel from us
            # now would only earn a response_cancel_not_active error.
            for r in st.responses.active.values():
                r.server_cancelling = True
        st.emit(SpeechStarted(st.speech_start_ms, ev.get("item_id")))

    def _speech_stopped(self, ev: dict[str, Any]) -> None:
        st = self.st
        st.user_speaking = False
        end = ev.get("audio_end_ms")
        end_ms = float(end) if isinstance(end, (int, float)) else None
        item_id = ev.get("item_id")
        if item_id and end_ms is not None and st.speech_start_ms is not None:
            turn = st.user_turns.setdefault(item_id, UserTurn(item_id))
            prefix = getattr(st.opts.turn_detection, "prefix_padding_ms", 0)
            turn.audio_ms = end_ms - max(0.0, st.speech_start_ms - prefix)
        st.emit(SpeechStopped(end_ms, item_id))

    def _committed(self, ev: dict[str, Any]) -> None:
        st = self.st
        item_id = str(ev["item_id"])
        turn = st.user_turns.setdefault(item_id, UserTurn(item_id))
        if not turn.audio_ms:
            turn.audio_ms = st.buffer_ms
        turn.done = st.opts.input_transcription is None
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
            st.add_item(msg, prev, first=prev is None and "previous_item_id" in ev)
        st.ops.resolve("commit", "")

    def _cleared(self, ev: dict[str, Any]) -> None:
        self.st.buffer_ms = 0.0

    # conversation items ---------------------------------------------------------------------
    def _item_added(self, ev: dict[str, Any]) -> None:
        st = self.st
        wire = ev["item"]
        item_id = str(wire["id"])
        prev = ev.get("previous_item_id")
        pending = st.ops.peek("create", item_id)
        if pending is not None:
            local_item, local_prev = pending.payload
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
            turn = st.user_turns.setdefault(item_id, UserTurn(item_id))
            turn.done = st.opts.input_transcription is None
            item = replace(
                item,
                content=tuple(
                    replace(p, duration_ms=turn.audio_ms) if isinstance(p, AudioPart) else p
                    for p in item.content
                ),
                complete=turn.done,
            )
        st.add_item(item, prev, first=prev is None and "previous_item_id" in ev)

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
        end_ms = float(ev["audio_end_ms"])
        item = st.mirror.get(item_id)
        if isinstance(item, Message):
            st.update_item(_truncated(item, end_ms))
        st.ops.resolve("truncate", item_id)

    # caller transcripts -------------------------------------------------------------------
    def _transcript_delta(self, ev: dict[str, Any]) -> None:
        st = self.st
        item_id = str(ev["item_id"])
        turn = st.user_turns.setdefault(item_id, UserTurn(item_id))
        turn.partial += str(ev.get("delta") or "")
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
        text = str(ev.get("transcript") or "")
        self._finish_user_item(item_id, text)
        self.st.emit(UserTranscript(item_id, text, final=True))

    def _transcript_failed(self, ev: dict[str, Any]) -> None:
        item_id = str(ev["item_id"])
        turn = self.st.user_turns.get(item_id)
        partial = turn.partial if turn else ""
        err = ev.get("error") or {}
        message = str(err.get("message") or err.get("code") or "transcription failed")
        self._finish_user_item(item_id, partial)
        self.st.emit(UserTranscript(item_id, partial, final=True, error=message))

    # responses ---------------------------------------------------------------------------
    def _response_created(self, ev: dict[str, Any]) -> None:
        st = self.st
        resp = ev["response"]
        rid = str(resp["id"])
        handle = st.responses.match_created(resp)
        metrics = ResponseMetrics(rid, handle.request_id if handle else None)
        active = ActiveResponse(rid, handle, metrics)
        st.responses.active[rid] = active
        st.metrics.append(metrics)
        if handle is not None:
            handle.metrics = metrics
            handle.set_created(rid)
            if handle.cancel_on_create:
                active.cancel_sent = True
                st.send_soon({"type": "response.cancel", "response_id": rid})
        st.emit(ResponseStarted(rid, handle.request_id if handle else None))

    def _stream(self, ev: dict[str, Any]) -> ItemStream | None:
        return self.st.responses.streams.get(str(ev.get("item_id")))

    def _output_item_added(self, ev: dict[str, Any]) -> None:
        st = self.st
        wire = ev["item"]
        rid = str(ev.get("response_id") or "")
        item_id = str(wire["id"])
        kind = wire.get("type")
        stream = ItemStream(item_id, rid, kind if kind in ("message", "function_call") else "other")
        stream.sample_rate = st.opts.output_rate
        stream.call_id = str(wire.get("call_id") or "")
        stream.name = str(wire.get("name") or "")
        st.responses.streams[item_id] = stream
        active = st.responses.active.get(rid)
        if active is not None:
            active.items.append(item_id)
        if item_id in st.mirror:
            return
        if kind == "message":
            st.add_item(Message(role="assistant", id=item_id, complete=False), st.mirror.last_id())
        elif kind == "function_call":
            st.add_item(
                FunctionCall(stream.call_id, stream.name, "", id=item_id), st.mirror.last_id()
            )

    def _content_part_added(self, ev: dict[str, Any]) -> None:
        stream = self._stream(ev)
        part = ev.get("part") or {}
        if stream is None:
            return
        kind = "audio" if part.get("type") in ("audio", "output_audio") else "text"
        if kind == "text" and self.st.opts.modality == "audio":
            self.st.log_once(
                "text-instead-of-audio",
                "realtime: the model answered in text although audio was requested; "
                "the text is delivered as TextDelta and the item keeps it as text",
            )
        stream.parts.append(kind)

    def _live(self, ev: dict[str, Any]) -> tuple[ItemStream, ActiveResponse | None] | None:
        stream = self._stream(ev)
        if stream is None:
            return None
        return stream, self.st.responses.active.get(stream.response_id)

    def _audio_delta(self, ev: dict[str, Any]) -> None:
        found = self._live(ev)
        if found is None:
            return
        stream, active = found
        payload = base64.b64decode(ev["delta"], validate=True)
        if not payload:
            return
        fmt = self.st.opts.output_audio_format
        if fmt == "pcm16":
            frame = AudioFrame.from_pcm16(payload[: len(payload) // 2 * 2], 24000)
        else:
            frame = g711.decode(payload, "ulaw" if fmt == "g711_ulaw" else "alaw", 8000)
        stream.audio_samples += frame.samples_per_channel
        if "audio" not in stream.parts:
            stream.parts.append("audio")
        if active is not None:
            active.metrics.mark_audio()
            active.metrics.audio_ms += frame.duration_ms
            if active.stopping:
                return  # being cancelled: the caller must not hear more of it
        self.st.emit(AudioDelta(stream.response_id, stream.item_id, frame))

    def _text_out(self, ev: dict[str, Any], *, transcript: bool) -> None:
        found = self._live(ev)
        if found is None:
            return
        stream, active = found
        delta = str(ev.get("delta") or "")
        if transcript:
            stream.transcript += delta
        else:
            stream.text += delta
            if "text" not in stream.parts:
                stream.parts.append("text")
        if active is not None:
            active.metrics.mark_text()
        if delta:
            self.st.emit(TextDelta(stream.response_id, stream.item_id, delta))

    def _transcript_out_delta(self, ev: dict[str, Any]) -> None:
        self._text_out(ev, transcript=True)

    def _text_delta(self, ev: dict[str, Any]) -> None:
        self._text_out(ev, transcript=False)

    def _transcript_out_done(self, ev: dict[str, Any]) -> None:
        stream = self._stream(ev)
        if stream is not None and isinstance(ev.get("transcript"), str):
            stream.transcript = ev["transcript"]

    def _text_done(self, ev: dict[str, Any]) -> None:
        stream = self._stream(ev)
        if stream is not None and isinstance(ev.get("text"), str):
            stream.text = ev["text"]
            if "text" not in stream.parts:
                stream.parts.append("text")

    def _args_delta(self, ev: dict[str, Any]) -> None:
        stream = self._stream(ev)
        if stream is not None:
            stream.arguments += str(ev.get("delta") or "")

    def _args_done(self, ev: dict[str, Any]) -> None:
        stream = self._stream(ev)
        if stream is None:
            return
        stream.arguments = str(ev.get("arguments") or stream.arguments)
        stream.name = str(ev.get("name") or stream.name)
        stream.call_id = str(ev.get("call_id") or stream.call_id)
        self._finish_call(stream)

    def _finish_call(self, stream: ItemStream) -> None:
        if stream.requested:
            return
        stream.requested = stream.done = True
        item = FunctionCall(
            stream.call_id, stream.name, stream.arguments or "{}", id=stream.item_id
        )
        self.st.update_item(item)
        self.st.emit(
            FunctionCallRequested(
                stream.response_id, stream.item_id, stream.call_id, stream.name, item.arguments
            )
        )

    def _output_item_done(self, ev: dict[str, Any]) -> None:
        wire = ev["item"]
        stream = self.st.responses.streams.get(str(wire["id"]))
        if stream is None:
            return
        if stream.kind == "function_call":
            if wire.get("status") != "incomplete":
                stream.arguments = str(wire.get("arguments") or stream.arguments)
                stream.call_id = str(wire.get("call_id") or stream.call_id)
                stream.name = str(wire.get("name") or stream.name)
                self._finish_call(stream)
            return
        self.finish_message(stream)

    def finish_message(self, stream: ItemStream) -> None:
        """The final item of an assistant message: transcript/text plus received audio."""
        if stream.done:
            return
        stream.done = True
        self.st.responses.streams.pop(stream.item_id, None)
        if stream.kind != "message":
            return
        parts: list[ContentPart] = []
        for kind in stream.parts:
            if kind == "audio":
                parts.append(AudioPart(transcript=stream.transcript, duration_ms=stream.audio_ms))
            else:
                parts.append(TextPart(stream.text))
        item = self.st.mirror.get(stream.item_id)
        if isinstance(item, Message):
            self.st.update_item(replace(item, content=tuple(parts), complete=True))

    def _response_done(self, ev: dict[str, Any]) -> None:
        st = self.st
        resp = ev["response"]
        rid = str(resp["id"])
        active = st.responses.active.pop(rid, None)
        st.responses.ended.append(rid)
        status = str(resp.get("status") or "completed")
        if status not in ("completed", "cancelled", "failed", "incomplete"):
            status = "failed"
        details = resp.get("status_details") or {}
        reason = details.get("reason")
        err = details.get("error") or {}
        error = (err.get("code") or err.get("type")) if isinstance(err, dict) and err else None
        usage = usage_from_wire(resp.get("usage"))
        # Items the server ended without output_item.done (cancellation) are final now.
        for item_id in list(active.items if active else ()):
            stream = st.responses.streams.get(item_id)
            if stream is not None and stream.kind == "message":
                self.finish_message(stream)
            elif stream is not None:
                st.responses.streams.pop(item_id, None)
        done = ResponseDone(rid, status, usage, reason, error)  # type: ignore[arg-type]
        if active is not None:
            active.metrics.finish(status, usage, reason, error)
            if active.handle is not None:
                active.handle.set_done(done)
        st.emit(done)
        self._wake_sender()

    # misc ---------------------------------------------------------------------------------
    def _rate_limits(self, ev: dict[str, Any]) -> None:
        limits = tuple(dict(x) for x in ev.get("rate_limits") or () if isinstance(x, dict))
        self.st.emit(RateLimits(limits))

    def _error(self, ev: dict[str, Any]) -> None:
        st = self.st
        err = ev.get("error") or {}
        code = str(err.get("code") or err.get("type") or "error")
        message = str(err.get("message") or code)
        event_id = err.get("event_id")
        st.errors_seen[code] += 1
        exc = BackendErrorException(message, code=code, recoverable=code not in FATAL_CODES)
        if isinstance(event_id, str):
            if st.ops.fail(event_id, exc) is not None:
                return
            handle = st.responses.by_request(event_id)
            if handle is not None:
                self._response_refused(handle, code, message)
                return
        if code == "response_cancel_not_active":
            # Lost a race with the response ending; nothing to tell the session.
            logging.getLogger("duplex.backends.openai").debug("realtime: %s", message)
            return
        if code in FATAL_CODES:
            st.fatal = (code, message)
        st.emit(BackendError(code, message, recoverable=code not in FATAL_CODES))

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


def _truncated(item: Message, end_ms: float) -> Message:
    """The item as the server holds it after truncation.

    The server drops the transcript of a truncated audio part; duplex keeps the
    words that fit in the played share of the audio (proportional, on a word
    boundary) so the transcript and a replay after reconnect say roughly what the
    caller heard.
    """
    parts: list[ContentPart] = []
    for p in item.content:
        if isinstance(p, AudioPart):
            total = p.duration_ms
            words = p.transcript.split()
            keep = len(words) if total <= 0 else int(len(words) * min(1.0, end_ms / total))
            parts.append(
                replace(p, transcript=" ".join(words[:keep]), duration_ms=min(total, end_ms))
            )
        else:
            parts.append(p)
    return replace(item, content=tuple(parts), truncated_ms=end_ms, complete=True)
