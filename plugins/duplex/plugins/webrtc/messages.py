"""The data-channel protocol between the agent and the playground page.

Agent -> page: one JSON object per session event, ``{"type": ..., ...}``, small
and stable so a page (or a test) can render it without knowing Python types.
Page -> agent: ``{"type": "text", "text": "..."}`` (typed input) and
``{"type": "hangup"}``.
"""

from __future__ import annotations

import json
from typing import Any

from duplex.agents.conversation import FunctionCall, Message
from duplex.agents.events import (
    AgentHandoff,
    AgentInterrupted,
    AgentStateChanged,
    AgentTranscribed,
    ConversationItemAdded,
    MetricsCollected,
    Reconnected,
    Reconnecting,
    SessionClosed,
    SessionError,
    ToolExecuted,
    UserIdle,
    UserStateChanged,
    UserTranscribed,
)

__all__ = ["ProtocolError", "event_to_message", "parse_client_message"]

#: Typed text longer than this is refused rather than handed to the model.
MAX_TEXT_CHARS = 4000


class ProtocolError(ValueError):
    """A message from the page that does not follow the protocol."""


def event_to_message(event: object) -> dict[str, Any] | None:
    """The JSON form of a session event, or None for events the page has no use for."""
    match event:
        case AgentStateChanged(old=old, new=new):
            return {"type": "agent_state", "old": old, "state": new}
        case UserStateChanged(old=old, new=new):
            return {"type": "user_state", "old": old, "state": new}
        case UserTranscribed(item_id=item_id, text=text, final=final):
            return _transcript("user", item_id, text, final)
        case AgentTranscribed(item_id=item_id, text=text, final=final):
            return _transcript("assistant", item_id, text, final)
        case ConversationItemAdded(item=FunctionCall() as call):
            # Shown as soon as the model asks, before the tool has run.
            return {
                "type": "tool_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            }
        case ConversationItemAdded(item=Message(role="user") as msg) if msg.text:
            # Typed text arrives as a complete user message, not as a transcript.
            return _transcript("user", msg.id, msg.text, True)
        case ToolExecuted(call=call, output=output, duration_s=duration_s):
            return {
                "type": "tool_result",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
                "output": output.output,
                "is_error": output.is_error,
                "duration_ms": round(duration_s * 1000.0, 1),
            }
        case MetricsCollected(metrics=m):
            return {
                "type": "metrics",
                "response_id": m.response_id,
                "end_to_end_ms": _ms(m.end_to_end_ms),
                "backend_ttfa_ms": _ms(m.backend_ttfa_ms),
                "interruption_ms": _ms(m.interruption_ms),
                "played_ms": _ms(m.played_ms),
                "interrupted": m.interrupted,
                "status": m.status,
            }
        case AgentInterrupted(item_id=item_id, played_ms=played_ms, latency_ms=latency_ms):
            return {
                "type": "interrupted",
                "item_id": item_id,
                "played_ms": _ms(played_ms),
                "latency_ms": _ms(latency_ms),
            }
        case SessionError(code=code, message=message, recoverable=recoverable):
            return {"type": "error", "code": code, "message": message, "recoverable": recoverable}
        case SessionClosed(reason=reason):
            return {"type": "closed", "reason": reason}
        case Reconnecting(planned=planned):
            return {"type": "reconnecting", "planned": planned}
        case Reconnected(planned=planned, downtime_ms=downtime_ms):
            return {"type": "reconnected", "planned": planned, "downtime_ms": _ms(downtime_ms)}
        case AgentHandoff(from_agent=old, to_agent=new):
            return {"type": "agent_handoff", "from": old, "to": new}
        case UserIdle(count=count, idle_s=idle_s):
            return {"type": "user_idle", "count": count, "idle_s": idle_s}
    return None


def _transcript(role: str, item_id: str, text: str, final: bool) -> dict[str, Any]:
    return {"type": "transcript", "role": role, "item_id": item_id, "text": text, "final": final}


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def parse_client_message(raw: str | bytes) -> dict[str, Any]:
    """Validate one message from the page; raises `ProtocolError` with a readable reason."""
    try:
        msg = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ProtocolError(f"not JSON: {e}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError('expected an object with a "type"')
    kind = msg["type"]
    if kind == "text":
        text = msg.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ProtocolError('"text" must be a non-empty string')
        if len(text) > MAX_TEXT_CHARS:
            raise ProtocolError(f"text longer than {MAX_TEXT_CHARS} characters")
        return {"type": "text", "text": text.strip()}
    if kind in ("hangup", "ping"):
        return {"type": kind}
    raise ProtocolError(f"unknown message type {kind!r}")
