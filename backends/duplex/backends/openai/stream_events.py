"""Response events: a reply's items, audio, text and function calls as they stream.

Split from `dispatch` because a response has a lifecycle of its own: created,
items added, deltas, items done, done (or aborted by a dropped socket).
"""

from __future__ import annotations

import base64
import binascii
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from duplex.agents import g711
from duplex.agents.audio import AudioFrame
from duplex.agents.backend import (
    AudioDelta,
    FunctionCallRequested,
    ResponseDone,
    ResponseStarted,
    TextDelta,
)
from duplex.agents.conversation import AudioPart, ContentPart, FunctionCall, Message, TextPart

from .items import server_item_id
from .metrics import ResponseMetrics, usage_from_wire
from .responses import ActiveResponse, ItemStream
from .state import SessionState


def _strict_b64decode(data: str) -> bytes:
    """Strict (rejects what is not base64, as ``validate=True`` does) and in C: no regex pass."""
    return binascii.a2b_base64(data, strict_mode=True)  # type: ignore[call-arg,unused-ignore]


def _validating_b64decode(data: str) -> bytes:
    return base64.b64decode(data, validate=True)


#: ``strict_mode`` came in Python 3.11; 3.10 validates with base64's regex check.
_b64decode = _strict_b64decode if sys.version_info >= (3, 11) else _validating_b64decode

#: Server event type (GA name) -> handler method of `ResponseEvents`.
RESPONSE_HANDLERS: dict[str, str] = {
    "response.created": "_response_created",
    "response.output_item.added": "_output_item_added",
    "response.content_part.added": "_content_part_added",
    "response.output_audio.delta": "_audio_delta",
    "response.output_audio_transcript.delta": "_transcript_out_delta",
    "response.output_audio_transcript.done": "_transcript_out_done",
    "response.output_text.delta": "_text_delta",
    "response.output_text.done": "_text_done",
    "response.function_call_arguments.delta": "_args_delta",
    "response.function_call_arguments.done": "_args_done",
    "response.output_item.done": "_output_item_done",
    "response.done": "_response_done",
}


class ResponseEvents:
    def __init__(self, st: SessionState, *, wake_sender: Callable[[], None]) -> None:
        self.st = st
        self._wake_sender = wake_sender

    def _response_created(self, ev: dict[str, Any]) -> None:
        st = self.st
        resp = ev["response"]
        rid = str(resp["id"])
        handle = st.responses.match_created(resp)
        metrics = ResponseMetrics(rid, handle.request_id if handle else None)
        active = ActiveResponse(rid, handle, metrics)
        st.responses.active[rid] = active
        st.reply_due_at = None  # the committed turn (if any) is being answered
        for call_id in st.outputs_sent:  # ... and so are the tool outputs it follows
            st.open_calls.pop(call_id, None)
        st.outputs_sent.clear()
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
        item_id = server_item_id(wire.get("id"))
        kind = wire.get("type")
        stream = ItemStream(item_id, rid, kind if kind in ("message", "function_call") else "other")
        stream.sample_rate = st.opts.output_rate
        stream.call_id = str(wire.get("call_id") or "")
        stream.name = str(wire.get("name") or "")
        st.responses.streams[item_id] = stream
        active = st.responses.active.get(rid)
        if active is not None:
            active.items.append(item_id)
            active.touch(delta=False)
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
        active = self.st.responses.active.get(stream.response_id)
        if active is not None:
            active.touch()
        return stream, active

    def _audio_delta(self, ev: dict[str, Any]) -> None:
        found = self._live(ev)
        if found is None:
            return
        stream, active = found
        payload = _b64decode(ev["delta"])
        if not payload:
            return
        fmt = self.st.opts.output_audio_format
        if fmt == "pcm16":
            # Straight from the decoded bytes: no copy, no re-check (the slice is whole samples).
            samples = np.frombuffer(payload, "<i2", len(payload) // 2).astype(np.int16, copy=False)
            frame = AudioFrame(samples.reshape(-1, 1), 24000, 1, _checked=True)
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
        found = self._live(ev)
        delta = ev.get("delta")
        if not isinstance(delta, str):
            raise TypeError("function call arguments delta is not a string")
        if found is not None:
            found[0].arguments += delta

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
        self.st.open_calls[stream.call_id] = time.monotonic()
        while len(self.st.open_calls) > 256:
            del self.st.open_calls[next(iter(self.st.open_calls))]
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
        # Everything past the id is read defensively: a done that is not applied would
        # leave the response active and block every later one.
        active = st.responses.active.pop(rid, None)
        st.responses.ended.append(rid)
        status = resp.get("status")
        if status not in ("completed", "cancelled", "failed", "incomplete"):
            status = "failed" if status is not None else "completed"
        details = resp.get("status_details")
        details = details if isinstance(details, dict) else {}
        reason = details.get("reason") if isinstance(details.get("reason"), str) else None
        err = details.get("error")
        error = None
        if isinstance(err, dict) and err:
            code = err.get("code") or err.get("type")
            error = code[:64] if isinstance(code, str) else "error"
        try:
            usage = usage_from_wire(resp.get("usage"))
        except Exception:
            usage = None
        # Items the server ended without output_item.done (cancellation) are final now.
        for item_id in list(active.items if active else ()):
            stream = st.responses.streams.get(item_id)
            if stream is not None and stream.kind == "message":
                self.finish_message(stream)
            elif stream is not None:
                st.responses.streams.pop(item_id, None)
        done = ResponseDone(rid, status, usage, reason, error)
        if active is not None:
            active.metrics.finish(status, usage, reason, error)
            if active.handle is not None:
                active.handle.set_done(done)
        st.emit(done)
        self._wake_sender()

    def abort(self, error: Exception) -> None:
        """The socket dropped: every active reply ends as failed, keeping what arrived."""
        st = self.st
        for rid, r in list(st.responses.active.items()):
            for item_id in r.items:
                stream = st.responses.streams.get(item_id)
                if stream is None:
                    continue
                if stream.kind == "function_call" and not stream.requested:
                    st.responses.streams.pop(item_id, None)
                    st.delete_item(item_id)  # never finished: no tool will run for it
                else:
                    self.finish_message(stream)
            r.metrics.finish("failed", None, None, "connection_lost")
            if r.handle is not None:
                r.handle.fail(error)
            st.responses.ended.append(rid)
            st.emit(ResponseDone(rid, "failed", None, None, "connection_lost"))
        st.responses.active.clear()
