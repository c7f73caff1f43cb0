"""An MCP server's tool as a `FunctionTool`: its own JSON schema, checked with `jsonschema`.

`@function_tool`s get their schema from a pydantic model; an MCP tool arrives with a schema
and no Python types, so validation uses the schema itself (the `jsonschema` package, which
the MCP SDK already depends on) and the result's content blocks become the output text.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import pydantic

from duplex.agents.errors import ToolArgumentsError, ToolDefinitionError, ToolError
from duplex.agents.tools import FunctionTool, inline_refs

#: Called with the validated arguments; returns the output text (or raises `MCPToolError`).
CallFn = Callable[..., Awaitable[str]]


class MCPToolError(ToolError):
    """The server ran the tool and reported a failure (``is_error``); the model reads the text."""


class _AnyArguments(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")


@dataclass(frozen=True, eq=False)
class MCPTool(FunctionTool):
    """A tool served by an MCP server; ``fn`` proxies the call to that server."""

    server: str = ""
    validator: Any = field(default=None, repr=False)

    @classmethod
    def create(
        cls,
        *,
        name: str,
        description: str,
        input_schema: dict[str, Any],
        call: CallFn,
        server: str,
        timeout: float | None,
    ) -> MCPTool:
        schema = inline_refs(dict(input_schema))
        schema.setdefault("type", "object")
        schema.setdefault("properties", {})
        try:
            validator_cls = jsonschema.validators.validator_for(schema)
            validator_cls.check_schema(schema)
        except jsonschema.SchemaError as e:
            raise ToolDefinitionError(
                f"{server}: tool {name!r} has an invalid schema: {e.message}"
            ) from None
        return cls(
            name=name,
            description=description,
            parameters=schema,
            fn=call,
            model=_AnyArguments,
            timeout=timeout,
            server=server,
            validator=validator_cls(schema),
        )

    def validate(self, arguments: str | dict[str, Any]) -> dict[str, Any]:
        if isinstance(arguments, str):
            try:
                raw = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as e:
                raise ToolArgumentsError(f"arguments are not valid JSON: {e.msg}") from None
        else:
            raw = arguments
        if not isinstance(raw, dict):
            raise ToolArgumentsError("arguments must be a JSON object")
        problems = sorted(
            f"{'.'.join(str(p) for p in err.absolute_path) or '<root>'}: {err.message}"
            for err in self.validator.iter_errors(raw)
        )
        if problems:
            raise ToolArgumentsError(f"invalid arguments for {self.name}: {'; '.join(problems)}")
        return raw


def result_text(content: list[Any], structured: Any) -> str:
    """The text the model reads: text blocks joined; structured content when there is no text."""
    texts: list[str] = []
    for block in content:
        kind = getattr(block, "type", None)
        if kind == "text":
            texts.append(str(getattr(block, "text", "")))
        elif kind in ("image", "audio"):
            texts.append(f"[{kind} omitted: {getattr(block, 'mime_type', '')}]")
        elif kind == "resource_link":
            texts.append(f"[resource {getattr(block, 'uri', '')}]")
        elif kind == "resource":
            resource = getattr(block, "resource", None)
            texts.append(str(getattr(resource, "text", "") or f"[resource {resource}]"))
    if texts:
        return "\n".join(texts)
    if structured is not None:
        return json.dumps(structured, ensure_ascii=False, default=str)
    return ""
