"""Conversation items <-> wire items.

Assistant audio cannot be re-created on a server, so an assistant message goes
out as text (its transcript); a user message with 24 kHz PCM goes out as audio.
A message with nothing to say cannot be created at all: `to_wire` returns None
and the mirror keeps it as local-only, so it is never sent as an empty item.
"""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import Any

from duplex.agents.conversation import (
    AudioPart,
    ContentPart,
    FunctionCall,
    FunctionCallOutput,
    Item,
    Message,
    TextPart,
)

from .dialect import Dialect

#: The service rejects longer item ids.
MAX_ID_LEN = 32


def server_item_id(value: Any) -> str:
    """The id of an item a server made; one it could not take back on a replay is refused
    (a malformed event), so a hostile id can never make the next reconnect fail."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LEN:
        raise ValueError(f"server item id {str(value)[:40]!r} is not 1-{MAX_ID_LEN} characters")
    return value


def to_wire(item: Item, dialect: Dialect, *, input_pcm16: bool) -> dict[str, Any] | None:
    """The wire item for ``item``, or None when it has no content a server accepts."""
    if isinstance(item, FunctionCall):
        return {
            "type": "function_call",
            "id": item.id,
            "call_id": item.call_id,
            "name": item.name,
            "arguments": item.arguments or "{}",
        }
    if isinstance(item, FunctionCallOutput):
        return {
            "type": "function_call_output",
            "id": item.id,
            "call_id": item.call_id,
            "output": item.output,
        }
    content = _content(item, dialect, input_pcm16=input_pcm16)
    if not content:
        return None
    role = "system" if item.role == "developer" else item.role
    return {"type": "message", "id": item.id, "role": role, "content": content}


def _content(msg: Message, dialect: Dialect, *, input_pcm16: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for part in msg.content:
        if msg.role == "assistant":
            text = part.text if isinstance(part, TextPart) else part.transcript
            if text:
                out.append({"type": dialect.assistant_text_type, "text": text})
            continue
        if isinstance(part, AudioPart) and msg.role == "user":
            if part.pcm16 and input_pcm16 and part.sample_rate == 24000:
                audio = base64.b64encode(part.pcm16).decode("ascii")
                entry: dict[str, Any] = {"type": "input_audio", "audio": audio}
                if part.transcript:
                    entry["transcript"] = part.transcript
                out.append(entry)
            elif part.transcript:
                out.append({"type": "input_text", "text": part.transcript})
            continue
        text = part.text if isinstance(part, TextPart) else part.transcript
        if text:
            out.append({"type": "input_text", "text": text})
    return out


def from_wire(wire: dict[str, Any]) -> Item | None:
    """A duplex item for a server item; None for kinds duplex does not model (MCP)."""
    kind = wire.get("type")
    item_id = server_item_id(wire.get("id"))
    if kind == "function_call":
        return FunctionCall(
            call_id=str(wire.get("call_id") or ""),
            name=str(wire.get("name") or ""),
            arguments=str(wire.get("arguments") or ""),
            id=item_id,
        )
    if kind == "function_call_output":
        return FunctionCallOutput(
            call_id=str(wire.get("call_id") or ""), output=str(wire.get("output") or ""), id=item_id
        )
    if kind != "message":
        return None
    role = wire.get("role")
    if role not in ("system", "user", "assistant"):
        raise ValueError(f"message with unknown role {role!r}")
    parts: list[ContentPart] = []
    for c in wire.get("content") or ():
        ctype = c.get("type")
        if ctype in ("input_text", "text", "output_text"):
            parts.append(TextPart(str(c.get("text") or "")))
        elif ctype in ("input_audio", "audio", "output_audio"):
            parts.append(AudioPart(transcript=str(c.get("transcript") or "")))
    return Message(
        role=role,
        content=tuple(parts),
        id=item_id,
        complete=wire.get("status") not in ("in_progress",),
    )


def truncated_item(item: Message, end_ms: float) -> Message:
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
