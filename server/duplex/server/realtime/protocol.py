"""Client events in: JSON -> a checked dict, validated against the openai SDK's own unions.

The SDK's unions carry a discriminator pydantic ignores; re-wrapped as real
discriminated unions they validate in about a microsecond and name the bad field.
Fields the schema does not know are refused like the service does (``unknown_parameter``).
"""

from __future__ import annotations

import json
from functools import cache
from typing import Annotated, Any, Literal, Union, get_args

import pydantic

from .errors import ProtocolError

Dialect = Literal["ga", "beta"]


def _strict(sdk_union: Any) -> pydantic.TypeAdapter[Any]:
    members = get_args(get_args(sdk_union)[0])
    union: Any = Annotated[Union[tuple(members)], pydantic.Field(discriminator="type")]  # noqa: UP007
    return pydantic.TypeAdapter(union)


@cache
def adapter(dialect: Dialect, side: Literal["client", "server"]) -> pydantic.TypeAdapter[Any]:
    if dialect == "ga":
        from openai.types import realtime as ga

        sdk = ga.RealtimeClientEvent if side == "client" else ga.RealtimeServerEvent
    else:
        from openai.types.beta import realtime as beta

        sdk = beta.RealtimeClientEvent if side == "client" else beta.RealtimeServerEvent
    return _strict(sdk)


@cache
def event_types(dialect: Dialect, side: Literal["client", "server"]) -> tuple[str, ...]:
    """Every event type the SDK documents for one direction of ``dialect``."""
    if dialect == "ga":
        from openai.types import realtime as ga

        sdk = ga.RealtimeClientEvent if side == "client" else ga.RealtimeServerEvent
    else:
        from openai.types.beta import realtime as beta

        sdk = beta.RealtimeClientEvent if side == "client" else beta.RealtimeServerEvent
    members = get_args(get_args(sdk)[0])
    return tuple(sorted(m.model_fields["type"].annotation.__args__[0] for m in members))


def extra_fields(node: Any, path: str = "") -> list[str]:
    """Dotted paths of keys no SDK model declares (the models themselves allow extras)."""
    found: list[str] = []
    if isinstance(node, pydantic.BaseModel):
        for key in node.model_extra or {}:
            found.append(f"{path}.{key}" if path else key)
        for name in type(node).model_fields:
            found += extra_fields(getattr(node, name), f"{path}.{name}" if path else name)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            found += extra_fields(v, f"{path}[{i}]")
    return found


def _param(loc: tuple[int | str, ...]) -> str:
    """pydantic's location without union member names: ``session.audio.input.format``."""
    parts: list[str] = []
    for p in loc[1:]:  # loc[0] is the discriminator tag
        if isinstance(p, int):
            parts.append(f"[{p}]")
        elif p[:1].isupper() or "[" in p or p.startswith(("function-", "literal")):
            continue
        else:
            parts.append(("." if parts else "") + p)
    return "".join(parts)


def parse(raw: str | bytes, dialect: Dialect) -> dict[str, Any]:
    """The client event as a plain dict, or `ProtocolError` as the service would word it."""
    try:
        event = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ProtocolError("invalid_json", f"The event is not valid JSON: {e}") from None
    if not isinstance(event, dict):
        raise ProtocolError("invalid_json", "The event must be a JSON object.")
    event_id = event.get("event_id")
    event_id = event_id if isinstance(event_id, str) else None
    kind = event.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(
            "missing_required_parameter",
            "Missing required parameter: 'type'.",
            param="type",
            event_id=event_id,
        )
    if kind not in event_types(dialect, "client"):
        supported = ", ".join(f"'{t}'" for t in event_types(dialect, "client"))
        raise ProtocolError(
            "invalid_value",
            f"Invalid value: '{kind[:64]}'. Supported values are: {supported}.",
            param="type",
            event_id=event_id,
        )
    checked = event
    session = event.get("session")
    if kind == "session.update" and isinstance(session, dict) and "model" in session:
        # Any model name is fine here (the beta schema lists only OpenAI's own).
        checked = {**event, "session": {k: v for k, v in session.items() if k != "model"}}
    try:
        model = adapter(dialect, "client").validate_python(checked)
    except pydantic.ValidationError as e:
        err = e.errors()[0]
        param = _param(err["loc"])
        code = "missing_required_parameter" if err["type"] == "missing" else "invalid_value"
        what = "Missing required parameter" if code == "missing_required_parameter" else "Invalid"
        raise ProtocolError(
            code, f"{what} '{param}': {err['msg']}.", param=param or None, event_id=event_id
        ) from None
    extra = extra_fields(model)
    if extra:
        raise ProtocolError(
            "unknown_parameter",
            f"Unknown parameter: '{extra[0]}'.",
            param=extra[0],
            event_id=event_id,
        )
    return event
