"""Conversation items: duplex's `Item` <-> the wire's item objects, in either dialect."""

from __future__ import annotations

from typing import Any

import pydantic

from duplex.agents.conversation import (
    AudioPart,
    FunctionCall,
    FunctionCallOutput,
    Item,
    Message,
    TextPart,
    new_item_id,
)
from duplex.agents.tools import FunctionTool

from .errors import ProtocolError, unsupported
from .protocol import Dialect


def to_wire(item: Item, dialect: Dialect, *, status: str | None = None) -> dict[str, Any]:
    """The item as the service shows it (no audio bytes: clients keep what they heard)."""
    out: dict[str, Any] = {"id": item.id, "object": "realtime.item"}
    if isinstance(item, FunctionCall):
        out.update(
            type="function_call",
            status=status or "completed",
            call_id=item.call_id,
            name=item.name,
            arguments=item.arguments,
        )
        return out
    if isinstance(item, FunctionCallOutput):
        out.update(type="function_call_output", call_id=item.call_id, output=item.output)
        if dialect == "beta":
            out["status"] = "completed"
        return out
    role = "system" if item.role == "developer" else item.role
    content: list[dict[str, Any]] = []
    for part in item.content:
        content.append(_part(part, role, dialect))
    if status is None:
        status = "completed" if item.complete else "in_progress"
    out.update(type="message", role=role, status=status, content=content)
    return out


def _part(part: TextPart | AudioPart, role: str, dialect: Dialect) -> dict[str, Any]:
    if role == "assistant":
        if isinstance(part, AudioPart):
            kind = "output_audio" if dialect == "ga" else "audio"
            return {"type": kind, "transcript": part.transcript}
        return {"type": "output_text" if dialect == "ga" else "text", "text": part.text}
    if isinstance(part, AudioPart):
        return {"type": "input_audio", "transcript": part.transcript or None}
    return {"type": "input_text", "text": part.text}


def from_wire(item: dict[str, Any], dialect: Dialect) -> Item:
    """A client's ``conversation.item.create`` item (already schema-checked) as a duplex item."""
    item_id = item.get("id") or new_item_id()
    kind = item.get("type")
    if kind == "function_call":
        return FunctionCall(
            call_id=item.get("call_id") or new_item_id("call"),
            name=item.get("name") or "",
            arguments=item.get("arguments") or "",
            id=item_id,
        )
    if kind == "function_call_output":
        if not item.get("call_id"):
            raise ProtocolError(
                "missing_required_parameter", "Missing call_id.", param="item.call_id"
            )
        return FunctionCallOutput(
            call_id=item["call_id"], output=item.get("output") or "", id=item_id
        )
    if kind != "message":
        raise unsupported(f"Items of type {kind!r}", param="item.type")
    role = item.get("role")
    if role not in ("system", "user", "assistant"):
        raise ProtocolError("invalid_value", "Invalid message role.", param="item.role")
    content = item.get("content") or []
    if not content:
        raise ProtocolError(
            "invalid_value", "A message item needs at least one content part.", param="item.content"
        )
    parts: list[TextPart | AudioPart] = []
    for i, c in enumerate(content):
        ctype = c.get("type")
        if ctype in ("input_text", "output_text", "text"):
            parts.append(TextPart(c.get("text") or ""))
        elif ctype in ("input_audio", "output_audio", "audio"):
            if c.get("audio") and not c.get("transcript"):
                raise unsupported(
                    "Audio content in conversation.item.create (send it with "
                    "input_audio_buffer.append, or give its transcript)",
                    param=f"item.content[{i}].audio",
                )
            parts.append(AudioPart(transcript=c.get("transcript") or ""))
        elif ctype == "input_image":
            raise unsupported("Image input", param=f"item.content[{i}].type")
        else:
            raise unsupported(f"Content of type {ctype!r}", param=f"item.content[{i}].type")
    return Message(role=role, content=tuple(parts), id=item_id)


def schema_tool(spec: dict[str, Any]) -> FunctionTool:
    """A tool the client runs: only its schema reaches the model, the server never calls it."""

    def never(**_: Any) -> None:  # pragma: no cover - the client executes its own tools
        raise RuntimeError("client-side tool")

    return FunctionTool(
        name=str(spec["name"]),
        description=str(spec.get("description") or ""),
        parameters=dict(spec.get("parameters") or {"type": "object", "properties": {}}),
        fn=never,
        model=pydantic.BaseModel,
    )
