"""The OpenAI SDK's own event types as a strict schema for both directions of the wire.

The SDK's unions carry a discriminator pydantic does not honour, so they are
re-wrapped as real discriminated unions. The SDK models allow extra fields; a
misspelt field would slip through, so `validate` also rejects any extra key.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union, get_args

import pydantic
from openai.types import realtime as ga
from openai.types.beta import realtime as beta

Side = Literal["client", "server"]
Dialect = Literal["ga", "beta"]


def _strict_union(sdk_union: Any) -> pydantic.TypeAdapter[Any]:
    members = get_args(get_args(sdk_union)[0])
    union: Any = Annotated[Union[tuple(members)], pydantic.Field(discriminator="type")]  # noqa: UP007
    return pydantic.TypeAdapter(union)


_ADAPTERS: dict[tuple[Dialect, Side], pydantic.TypeAdapter[Any]] = {
    ("ga", "client"): _strict_union(ga.RealtimeClientEvent),
    ("ga", "server"): _strict_union(ga.RealtimeServerEvent),
    ("beta", "client"): _strict_union(beta.RealtimeClientEvent),
    ("beta", "server"): _strict_union(beta.RealtimeServerEvent),
}


class SchemaError(AssertionError):
    pass


def _extras(node: Any, path: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(node, pydantic.BaseModel):
        for key in node.model_extra or {}:
            found.append(f"{path}.{key}" if path else key)
        for name in type(node).model_fields:
            found += _extras(getattr(node, name), f"{path}.{name}" if path else name)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            found += _extras(v, f"{path}[{i}]")
    return found


def validate(event: dict[str, Any], *, dialect: Dialect, side: Side) -> Any:
    """The parsed SDK model, or `SchemaError` naming what does not fit."""
    try:
        model = _ADAPTERS[(dialect, side)].validate_python(event)
    except pydantic.ValidationError as e:
        raise SchemaError(f"{side} event {event.get('type')!r} ({dialect}): {e}") from None
    extra = _extras(model)
    if extra:
        raise SchemaError(
            f"{side} event {event.get('type')!r} ({dialect}) has unknown fields {extra}"
        )
    return model


def server_event_types(dialect: Dialect) -> set[str]:
    """Every server event type the SDK documents for ``dialect``."""
    sdk = ga.RealtimeServerEvent if dialect == "ga" else beta.RealtimeServerEvent
    return {m.model_fields["type"].annotation.__args__[0] for m in get_args(get_args(sdk)[0])}
