"""`@function_tool`: a typed Python function becomes a tool the model can call.

The JSON schema and argument validation both come from one pydantic model built
from the signature, so what the model is told and what is checked cannot drift.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar, get_type_hints, overload

import pydantic

from .errors import ToolArgumentsError, ToolDefinitionError
from .tool_threads import ToolThreads, default_tool_threads

F = TypeVar("F", bound=Callable[..., Any])

#: Seconds a tool may run unless it says otherwise; ``timeout=None`` must be asked for.
DEFAULT_TOOL_TIMEOUT = 30.0
#: Arguments longer than this (JSON characters) are refused before they are parsed.
MAX_ARGUMENT_CHARS = 100_000
#: Arguments nested deeper than this are refused before they are parsed.
MAX_ARGUMENT_DEPTH = 32

_TOOL_ATTR = "__duplex_tool__"
_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_SKIPPED_PARAMS = {"self", "cls", "context", "ctx"}


@dataclass(frozen=True)
class ToolInfo:
    name: str
    description: str
    timeout: float | None


@dataclass(frozen=True, eq=False)
class FunctionTool:
    """A callable bound to its schema; what backends advertise and the runner calls."""

    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Any] = field(repr=False)
    model: type[pydantic.BaseModel] = field(repr=False)
    timeout: float | None = DEFAULT_TOOL_TIMEOUT

    def schema(self) -> dict[str, Any]:
        """Chat-completions style ``{"type": "function", "function": {...}}``."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }

    def validate(self, arguments: str | dict[str, Any]) -> dict[str, Any]:
        """Parse and check arguments; raises `ToolArgumentsError` the model can read.

        Size and depth are checked before parsing, so hostile arguments cost little
        and never reach the parser's recursion or integer limits.
        """
        if isinstance(arguments, str):
            check_argument_text(arguments)
            try:
                raw = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as e:
                raise ToolArgumentsError(f"arguments are not valid JSON: {e.msg}") from None
            except (ValueError, RecursionError) as e:  # e.g. an int over Python's digit limit
                raise ToolArgumentsError(f"arguments cannot be read: {_first_line(e)}") from None
        else:
            raw = arguments
            check_argument_depth(raw)
        if not isinstance(raw, dict):
            raise ToolArgumentsError("arguments must be a JSON object")
        try:
            parsed = self.model.model_validate(raw)
        except (ValueError, RecursionError) as e:
            if not isinstance(e, pydantic.ValidationError):
                raise ToolArgumentsError(
                    f"invalid arguments for {self.name}: {_first_line(e)}"
                ) from None
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
                for err in e.errors()
            )
            raise ToolArgumentsError(
                f"invalid arguments for {self.name}: {problems[:1000]}"
            ) from None
        return {name: getattr(parsed, name) for name in type(parsed).model_fields}

    async def invoke(self, arguments: dict[str, Any], *, threads: ToolThreads | None = None) -> Any:
        """Call with validated arguments; sync functions run in a thread so audio never stalls.

        Sync tools use ``threads`` (default: the process-wide `ToolThreads`), never the
        loop's default executor, which a hung tool would otherwise starve.
        """
        if inspect.iscoroutinefunction(self.fn):
            coro: Awaitable[Any] = self.fn(**arguments)
        else:
            pool = threads or default_tool_threads()
            coro = pool.run(functools.partial(self.fn, **arguments))
        if self.timeout is None:
            return await coro
        return await asyncio.wait_for(coro, self.timeout)


@overload
def function_tool(fn: F, /) -> F: ...
@overload
def function_tool(
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = DEFAULT_TOOL_TIMEOUT,
) -> Callable[[F], F]: ...


def function_tool(
    fn: F | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = DEFAULT_TOOL_TIMEOUT,
) -> F | Callable[[F], F]:
    """Mark a function or `Agent` method as a tool.

    The description is the docstring's first paragraph; ``name: text`` lines (or a
    Google-style ``Args:`` block) describe the parameters. ``timeout`` (seconds) ends
    a call that runs too long with an error the model reads; ``None`` disables it.
    """

    def mark(f: F) -> F:
        tool_name = name or f.__name__
        if not _NAME_RE.match(tool_name):
            raise ToolDefinitionError(f"tool name {tool_name!r} must match {_NAME_RE.pattern}")
        info = ToolInfo(tool_name, description or "", timeout)
        setattr(f, _TOOL_ATTR, info)
        # Build once now so a bad signature fails at import, not at the first call.
        build_tool(f)
        return f

    return mark(fn) if fn is not None else mark


def is_tool(obj: object) -> bool:
    return hasattr(obj, _TOOL_ATTR)


def build_tool(fn: Callable[..., Any]) -> FunctionTool:
    """A `FunctionTool` for a decorated function or bound method."""
    info: ToolInfo = getattr(fn, _TOOL_ATTR, None) or ToolInfo(
        fn.__name__, "", DEFAULT_TOOL_TIMEOUT
    )
    sig = inspect.signature(fn)
    summary, param_docs = parse_docstring(inspect.getdoc(fn) or "", sig.parameters)
    try:
        hints = get_type_hints(fn, include_extras=True)
    except Exception as e:
        raise ToolDefinitionError(f"cannot resolve type hints of {fn.__name__}: {e}") from e
    fields: dict[str, Any] = {}
    for pname, param in sig.parameters.items():
        if pname in _SKIPPED_PARAMS or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if pname not in hints:
            raise ToolDefinitionError(f"parameter {pname!r} of {fn.__name__} needs a type hint")
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[pname] = (
            hints[pname],
            pydantic.Field(default=default, description=param_docs.get(pname)),
        )
    try:
        model = pydantic.create_model(
            f"{info.name}_args",
            __config__=pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=False),
            **fields,
        )
        schema = inline_refs(model.model_json_schema())
    except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError, TypeError) as e:
        raise ToolDefinitionError(f"unsupported parameter type in {fn.__name__}: {e}") from e
    schema.pop("title", None)
    schema.setdefault("properties", {})
    schema["additionalProperties"] = False
    return FunctionTool(
        name=info.name,
        description=info.description or summary,
        parameters=schema,
        fn=fn,
        model=model,
        timeout=info.timeout,
    )


def check_argument_text(text: str) -> None:
    """Refuse argument JSON that is too long or nested too deep, without parsing it."""
    if len(text) > MAX_ARGUMENT_CHARS:
        raise ToolArgumentsError(
            f"arguments are {len(text)} characters long; at most {MAX_ARGUMENT_CHARS} are accepted"
        )
    depth = deepest = 0
    # Brackets inside strings do not nest: drop string bodies (escapes included) first.
    for ch in _BRACKETS.findall(_STRINGS.sub("", text)):
        depth = depth + 1 if ch in "[{" else depth - 1
        if depth > deepest:
            deepest = depth
            if deepest > MAX_ARGUMENT_DEPTH:
                raise ToolArgumentsError(
                    f"arguments are nested deeper than {MAX_ARGUMENT_DEPTH} levels"
                )


def check_argument_depth(value: Any) -> None:
    """The same depth limit for arguments a backend already parsed (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Iterable[Any] = node.values()
        elif isinstance(node, (list, tuple)):
            children = node
        else:
            continue
        if depth > MAX_ARGUMENT_DEPTH:
            raise ToolArgumentsError(
                f"arguments are nested deeper than {MAX_ARGUMENT_DEPTH} levels"
            )
        stack.extend((child, depth + 1) for child in children)


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(r"[\[\]{}]")


def _first_line(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:
        text = type(exc).__name__
    return (text.splitlines() or [type(exc).__name__])[0][:200]


def find_tools(obj: object) -> list[FunctionTool]:
    """Tools defined as methods on ``obj`` (bound, so ``self`` is passed)."""
    tools: list[FunctionTool] = []
    for attr in dir(type(obj)):
        member = getattr(type(obj), attr, None)
        if member is not None and is_tool(member):
            tools.append(build_tool(getattr(obj, attr)))
    return tools


def parse_docstring(doc: str, param_names: Iterable[str] = ()) -> tuple[str, dict[str, str]]:
    """Summary, and each parameter's description from ``name: text`` (inline or in ``Args:``)."""
    names = [n for n in param_names if n]
    text = doc.strip()
    if not names:
        return " ".join(text.split("\n\n")[0].split()), {}
    # A name starts a description at the start of a line or after a sentence
    # ("Book a table. people: ..."), never mid-sentence ("search for a query: ...").
    pattern = re.compile(
        r"(?:^[ \t]*|(?<=[.;,][ \t]))("
        + "|".join(map(re.escape, names))
        + r")\s*(?:\([^)]*\))?\s*:\s*",
        re.MULTILINE,
    )
    # With a Google-style "Args:" block, only that block describes parameters.
    header = re.search(r"(?im)^\s*(?:args|arguments|parameters)\s*:\s*$", text)
    matches = list(pattern.finditer(text, header.end() if header else 0))
    head_end = header.start() if header else (matches[0].start() if matches else len(text))
    head = text[:head_end]
    summary = " ".join(head.split("\n\n")[0].split()) if head.strip() else ""
    params: dict[str, str] = {}
    for k, m in enumerate(matches):
        stop = matches[k + 1].start() if k + 1 < len(matches) else len(text)
        body = re.split(r"\n\s*\n", text[m.end() : stop])[0]
        params[m.group(1)] = " ".join(body.split())
    return summary, params


def inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """Realtime APIs reject ``$ref``; nested models are written out in place."""
    defs = schema.pop("$defs", {})

    def walk(node: Any, seen: tuple[str, ...] = ()) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                key = ref.split("/")[-1]
                if key in seen:
                    raise ToolDefinitionError(f"recursive type {key} cannot be a tool parameter")
                target = dict(defs[key])
                target.pop("title", None)
                extra = {k: v for k, v in node.items() if k != "$ref"}
                return walk({**target, **extra}, (*seen, key))
            return {
                k: walk(v, seen) for k, v in node.items() if k != "title" or not isinstance(v, str)
            }
        if isinstance(node, list):
            return [walk(v, seen) for v in node]
        return node

    out = walk(schema)
    assert isinstance(out, dict)
    return out
