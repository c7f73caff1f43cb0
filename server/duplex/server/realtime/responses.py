"""One response on the wire: the cascade's reply events -> the service's event sequence.

created -> (output_item.added, conversation.item.added, content_part.added, audio and
transcript deltas, ..._done, content_part.done, output_item.done, conversation.item.done)
per item -> done with usage. Out-of-band responses (``conversation: "none"``) send the
same sequence without the conversation.item events; their items never join the conversation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from duplex.agents.audio import AudioFrame
from duplex.agents.backend import FunctionCallRequested, ResponseDone, ResponseHandle, Usage
from duplex.agents.conversation import FunctionCall, Message

from .audio_formats import OutputAudio
from .config import AudioFormat, SessionConfig, format_name, tool_choice_name
from .errors import unsupported
from .items import to_wire
from .wire import Wire, new_id

_GA_FORMAT_OBJ: dict[AudioFormat, dict[str, Any]] = {
    "pcm16": {"type": "audio/pcm", "rate": 24000},
    "g711_ulaw": {"type": "audio/pcmu"},
    "g711_alaw": {"type": "audio/pcma"},
}
#: The service's status_details reasons; the cascade's others map onto the nearest.
_REASONS = {"turn_detected", "client_cancelled", "max_output_tokens", "content_filter"}


@dataclass
class ResponseParams:
    instructions: str | None = None
    tool_choice: str | None = None
    metadata: dict[str, Any] | None = None
    out_of_band: bool = False
    audio_out: bool = True
    output_format: AudioFormat = "pcm16"
    voice: str = ""
    max_output_tokens: int | str | None = None
    #: The client's ``response.create`` event id (None for a server-VAD response).
    event_id: str | None = None


def params_from(spec: dict[str, Any], cfg: SessionConfig, event_id: str | None) -> ResponseParams:
    """A ``response.create``'s settings over the session's; refuses what the cascade lacks."""
    for key in ("input", "tools", "prompt", "reasoning"):
        if spec.get(key):
            raise unsupported(f"response.{key}", param=f"response.{key}")
    conversation = spec.get("conversation") or "auto"
    if conversation not in ("auto", "none"):
        raise unsupported(
            "A conversation other than 'auto' or 'none'", param="response.conversation"
        )
    if cfg.dialect == "ga":
        mods = spec.get("output_modalities")
        out = (spec.get("audio") or {}).get("output") or {}
        output_format = format_name(out.get("format"), cfg.output_format)
        voice = out.get("voice")
        max_tokens = spec.get("max_output_tokens")
    else:
        mods = spec.get("modalities")
        output_format = format_name(spec.get("output_audio_format"), cfg.output_format)
        voice = spec.get("voice")
        max_tokens = spec.get("max_response_output_tokens")
    audio_out = ("audio" in mods) if mods is not None else cfg.audio_out
    choice = spec.get("tool_choice")
    return ResponseParams(
        instructions=spec.get("instructions"),
        tool_choice=tool_choice_name(choice) if choice is not None else cfg.tool_choice,
        metadata=spec.get("metadata"),
        out_of_band=conversation == "none",
        audio_out=audio_out,
        output_format=output_format,
        voice=str(voice.get("id") if isinstance(voice, dict) else voice or cfg.voice),
        max_output_tokens=max_tokens,
        event_id=event_id,
    )


@dataclass
class _Out:
    item_id: str
    index: int
    wire: dict[str, Any]
    audio: OutputAudio | None = None
    transcript: str = ""
    open: bool = True


@dataclass
class ActiveResponse:
    params: ResponseParams
    wire: Wire
    conversation_id: str
    #: Milliseconds of audio sent per item (truncation may not go beyond it).
    audio_ms: dict[str, float]
    handle: ResponseHandle | None = None
    #: The id clients see, announced at once (as the service does), before the cascade starts.
    id: str = field(default_factory=lambda: new_id("resp"))
    #: The cascade's own id for the reply, once it started.
    backend_id: str | None = None
    cancel_reason: str | None = None
    finished: bool = False
    outputs: list[_Out] = field(default_factory=list)

    @property
    def dialect(self) -> str:
        return self.wire.dialect

    # --- the response object ----------------------------------------------------------
    def _object(self, status: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        p = self.params
        out: dict[str, Any] = {
            "id": self.id,
            "object": "realtime.response",
            "status": status,
            "output": [o.wire for o in self.outputs],
            "conversation_id": None if p.out_of_band else self.conversation_id,
            "max_output_tokens": p.max_output_tokens or "inf",
        }
        modalities = ["audio"] if p.audio_out else ["text"]
        if self.dialect == "ga":
            out["output_modalities"] = modalities
            out["audio"] = {"output": {"format": _GA_FORMAT_OBJ[p.output_format], "voice": p.voice}}
        else:
            out["modalities"] = ["text", "audio"] if p.audio_out else ["text"]
            out["output_audio_format"] = p.output_format
            out["voice"] = p.voice
        if p.metadata is not None:
            out["metadata"] = p.metadata
        return {**out, **(extra or {})}

    def announce(self) -> None:
        self.wire.send({"type": "response.created", "response": self._object("in_progress")})
        self.wire.send({"type": "rate_limits.updated", "rate_limits": RATE_LIMITS})

    # --- items ------------------------------------------------------------------------
    def _find(self, item_id: str) -> _Out | None:
        return next((o for o in self.outputs if o.item_id == item_id), None)

    def owns(self, item_id: str) -> bool:
        return self._find(item_id) is not None

    def _ack(self, kind: str, wire: dict[str, Any], previous: str | None) -> None:
        if self.params.out_of_band:
            return
        if self.dialect == "beta":
            if kind == "added":
                self.wire.send(
                    {
                        "type": "conversation.item.created",
                        "item": wire,
                        "previous_item_id": previous,
                    }
                )
            return
        self.wire.send(
            {"type": f"conversation.item.{kind}", "item": wire, "previous_item_id": previous}
        )

    def _add(
        self, item: Message | FunctionCall, previous: str | None, wire: dict[str, Any]
    ) -> _Out:
        out = _Out(item.id, len(self.outputs), wire)
        self.outputs.append(out)
        self.wire.send(
            {
                "type": "response.output_item.added",
                "response_id": self.id,
                "output_index": out.index,
                "item": wire,
            }
        )
        self._ack("added", wire, previous)
        return out

    def _base(self, out: _Out) -> dict[str, Any]:
        return {
            "response_id": self.id,
            "item_id": out.item_id,
            "output_index": out.index,
            "content_index": 0,
        }

    def message_added(self, msg: Message, previous: str | None, source_rate: int) -> None:
        wire = to_wire(msg, self.wire.dialect, status="in_progress")
        wire["content"] = []
        out = self._add(msg, previous, wire)
        self.audio_ms.setdefault(msg.id, 0.0)
        if self.params.audio_out:
            out.audio = OutputAudio(self.params.output_format, source_rate)
            part: dict[str, Any] = {"type": "audio", "transcript": ""}
        else:
            part = {"type": "text", "text": ""}
        self.wire.send({"type": "response.content_part.added", **self._base(out), "part": part})

    def text_delta(self, item_id: str, text: str) -> None:
        out = self._find(item_id)
        if out is None or not out.open:
            return
        out.transcript += text
        kind = (
            "response.output_audio_transcript.delta" if out.audio else "response.output_text.delta"
        )
        self.wire.send({"type": kind, **self._base(out), "delta": text})

    def audio_delta(self, item_id: str, frame: AudioFrame) -> None:
        out = self._find(item_id)
        if out is None or not out.open or out.audio is None:
            return
        self.audio_ms[item_id] = self.audio_ms.get(item_id, 0.0) + frame.duration_ms
        data = out.audio.encode(frame)
        if data:
            self.wire.send(
                {"type": "response.output_audio.delta", **self._base(out), "delta": data}
            )

    def message_done(self, msg: Message, previous: str | None, *, cancelled: bool) -> None:
        out = self._find(msg.id)
        if out is None or not out.open:
            return
        out.open = False
        base = self._base(out)
        transcript = msg.text
        if out.audio is not None:
            tail = out.audio.flush()
            if tail:
                self.wire.send({"type": "response.output_audio.delta", **base, "delta": tail})
            self.wire.send({"type": "response.output_audio.done", **base})
            self.wire.send(
                {"type": "response.output_audio_transcript.done", **base, "transcript": transcript}
            )
            part: dict[str, Any] = {"type": "audio", "transcript": transcript}
        else:
            self.wire.send({"type": "response.output_text.done", **base, "text": transcript})
            part = {"type": "text", "text": transcript}
        self.wire.send({"type": "response.content_part.done", **base, "part": part})
        status = "incomplete" if cancelled else "completed"
        out.wire = to_wire(msg, self.wire.dialect, status=status)
        if out.audio is None:  # a text-only response: the item holds text, not audio
            kind = "output_text" if self.dialect == "ga" else "text"
            out.wire["content"] = [{"type": kind, "text": transcript}]
        self._item_done(out, previous)

    def _item_done(self, out: _Out, previous: str | None) -> None:
        self.wire.send(
            {
                "type": "response.output_item.done",
                "response_id": self.id,
                "output_index": out.index,
                "item": out.wire,
            }
        )
        self._ack("done", out.wire, previous)

    def call_added(self, call: FunctionCall, previous: str | None) -> None:
        wire = to_wire(call, self.wire.dialect, status="in_progress")
        wire["arguments"] = ""
        self._add(call, previous, wire)

    def call_requested(self, ev: FunctionCallRequested, previous: str | None) -> None:
        out = self._find(ev.item_id)
        if out is None or not out.open:
            return
        out.open = False
        base = {
            "response_id": self.id,
            "item_id": ev.item_id,
            "output_index": out.index,
            "call_id": ev.call_id,
        }
        # The cascade hands over whole calls; streamed as deltas of at most 64 characters.
        for i in range(0, len(ev.arguments), 64):
            self.wire.send(
                {
                    "type": "response.function_call_arguments.delta",
                    **base,
                    "delta": ev.arguments[i : i + 64],
                }
            )
        done: dict[str, Any] = {
            "type": "response.function_call_arguments.done",
            **base,
            "arguments": ev.arguments,
        }
        if self.dialect == "ga":
            done["name"] = ev.name
        self.wire.send(done)
        out.wire = {**out.wire, "arguments": ev.arguments, "status": "completed"}
        self._item_done(out, previous)

    # --- end --------------------------------------------------------------------------
    def close_open_items(self) -> None:
        """Items the cascade never finished (a cancelled call) end as incomplete."""
        ga = self.dialect == "ga"
        for out in self.outputs:
            if out.open:
                out.open = False
                out.wire = {**out.wire, "status": "incomplete"}
                if out.wire.get("type") == "message":
                    if out.audio is not None:
                        part = {
                            "type": "output_audio" if ga else "audio",
                            "transcript": out.transcript,
                        }
                    else:
                        part = {"type": "output_text" if ga else "text", "text": out.transcript}
                    out.wire["content"] = [part]
                self._item_done(out, None)

    def done(self, ev: ResponseDone) -> None:
        if self.finished:
            return
        self.finished = True
        self.close_open_items()
        status = ev.status
        extra: dict[str, Any] = {"usage": usage_payload(ev.usage)}
        if status == "cancelled":
            reason = self.cancel_reason or ev.reason or "client_cancelled"
            if reason not in _REASONS:
                reason = "client_cancelled"
            extra["status_details"] = {"type": "cancelled", "reason": reason}
        elif status == "failed":
            extra["status_details"] = {
                "type": "failed",
                "error": {
                    "type": "server_error",
                    "code": "server_error",
                    "message": ev.error or "",
                },
            }
        elif status == "incomplete":
            extra["status_details"] = {
                "type": "incomplete",
                "reason": ev.reason or "max_output_tokens",
            }
        self.wire.send({"type": "response.done", "response": self._object(status, extra)})


#: A self-hosted server has no quota; the event is sent because clients expect it.
RATE_LIMITS = [
    {"name": "requests", "limit": 1_000_000, "remaining": 1_000_000, "reset_seconds": 0.0},
    {"name": "tokens", "limit": 1_000_000_000, "remaining": 1_000_000_000, "reset_seconds": 0.0},
]


def usage_payload(usage: Usage | None) -> dict[str, Any]:
    u = usage or Usage()
    return {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "total_tokens": u.total_tokens,
        "input_token_details": {
            "text_tokens": u.input_text_tokens or u.input_tokens,
            "audio_tokens": u.input_audio_tokens,
            "cached_tokens": u.input_cached_tokens,
        },
        "output_token_details": {
            "text_tokens": u.output_text_tokens or u.output_tokens,
            "audio_tokens": u.output_audio_tokens,
        },
    }
