"""`@function_tool`: schemas from type hints and docstrings, validation, invocation."""

from __future__ import annotations

import asyncio
import enum
import json
import sys
import threading
import typing
from dataclasses import dataclass
from typing import Any, Literal, Optional

import pydantic
import pytest
from typing_extensions import TypedDict

from duplex.agents.agent import Agent
from duplex.agents.errors import ToolArgumentsError, ToolDefinitionError
from duplex.agents.tools import FunctionTool, build_tool, function_tool, is_tool, parse_docstring

# Parameter types live at module level: hints are resolved against the module globals.


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class Address:
    street: str
    zip_code: int


@dataclass
class Guest:
    name: str
    address: Address


class Extras(TypedDict):
    cake: bool
    note: str


class Payment(pydantic.BaseModel):
    amount: float
    currency: str = "EUR"


@dataclass
class Tree:
    value: int
    children: list[Tree]


@function_tool
def everything(
    text: str,
    count: int,
    ratio: float,
    flag: bool,
    size: Literal["small", "large"],
    color: Color,
    maybe: Optional[int],  # noqa: UP045 - the typing spelling must work too
    numbers: list[int],
    guest: Guest,
    extras: Extras,
    payment: Payment,
    limit: int = 5,
    tag: str | None = None,
) -> str:
    """Exercise every supported type.

    Args:
        text: free text.
        count (int): how many
            of them, a continued line.
        payment: how the guest pays.

    Returns:
        a summary.
    """
    return f"{text}:{count}"


def props(tool: FunctionTool) -> dict[str, Any]:
    properties = tool.schema()["function"]["parameters"]["properties"]
    assert isinstance(properties, dict)
    return properties


# --- schema -------------------------------------------------------------------------------


def test_schema_for_scalar_literal_enum_optional_and_list() -> None:
    tool = build_tool(everything)
    p = props(tool)
    assert p["text"] == {"type": "string", "description": "free text."}
    assert p["count"] == {"type": "integer", "description": "how many of them, a continued line."}
    assert p["ratio"] == {"type": "number"}
    assert p["flag"] == {"type": "boolean"}
    assert p["size"] == {"type": "string", "enum": ["small", "large"]}
    assert p["color"] == {"type": "string", "enum": ["red", "blue"]}
    assert p["maybe"] == {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    assert p["numbers"] == {"type": "array", "items": {"type": "integer"}}
    assert p["limit"] == {"type": "integer", "default": 5}
    assert p["tag"]["default"] is None


def test_schema_writes_nested_types_in_place() -> None:
    p = props(build_tool(everything))
    assert p["guest"]["type"] == "object"
    assert p["guest"]["required"] == ["name", "address"]
    address = p["guest"]["properties"]["address"]
    assert address["properties"] == {"street": {"type": "string"}, "zip_code": {"type": "integer"}}
    assert p["extras"]["properties"] == {"cake": {"type": "boolean"}, "note": {"type": "string"}}
    assert p["extras"]["required"] == ["cake", "note"]
    assert p["payment"]["properties"]["amount"] == {"type": "number"}
    assert p["payment"]["required"] == ["amount"]
    assert p["payment"]["description"] == "how the guest pays."
    # Realtime APIs reject references and do not need titles.
    dumped = json.dumps(everything_schema := build_tool(everything).schema())
    assert "$ref" not in dumped and "$defs" not in dumped and '"title"' not in dumped
    assert everything_schema["function"]["parameters"]["additionalProperties"] is False


def test_schema_envelope_required_and_summary() -> None:
    schema = build_tool(everything).schema()
    assert schema["type"] == "function"
    fn = schema["function"]
    assert fn["name"] == "everything"
    assert fn["description"] == "Exercise every supported type."
    assert fn["parameters"]["type"] == "object"
    # No default means required, even for Optional (the model must say null explicitly).
    assert set(fn["parameters"]["required"]) == {
        "text", "count", "ratio", "flag", "size", "color", "maybe", "numbers", "guest",
        "extras", "payment",
    }  # fmt: skip


class Concierge(Agent):
    instructions = "You are a hotel concierge."

    def __init__(self) -> None:
        self.booked: list[tuple[str, int]] = []
        super().__init__()

    @function_tool
    async def book_table(self, restaurant: str, people: int) -> str:
        """Book a table. people: how many guests."""
        self.booked.append((restaurant, people))
        return f"booked {restaurant} for {people}"

    @function_tool(name="weather_lookup", description="Weather now.", timeout=None)
    def weather(self, city: str) -> str:
        return f"sunny in {city}"

    def not_a_tool(self, x: int) -> int:
        return x


async def test_agent_methods_become_bound_tools() -> None:
    agent = Concierge()
    tools = {t.name: t for t in agent.tools}
    assert set(tools) == {"book_table", "weather_lookup"}
    book = tools["book_table"]
    assert book.description == "Book a table."
    assert props(book) == {
        "restaurant": {"type": "string"},
        "people": {"type": "integer", "description": "how many guests."},
    }
    assert "self" not in json.dumps(book.schema())
    assert await book.invoke(book.validate('{"restaurant": "Luigi", "people": 2}')) == (
        "booked Luigi for 2"
    )
    assert agent.booked == [("Luigi", 2)]
    weather = tools["weather_lookup"]
    assert (weather.description, weather.timeout) == ("Weather now.", None)
    assert await weather.invoke(weather.validate({"city": "Oslo"})) == "sunny in Oslo"
    assert is_tool(Concierge.book_table) and not is_tool(Concierge.not_a_tool)


async def test_free_functions_as_agent_tools() -> None:
    def add(a: int, b: int) -> int:
        """Add two numbers. a: the first. b: the second."""
        return a + b

    agent = Agent(tools=[add, build_tool(everything)])
    tool = next(t for t in agent.tools if t.name == "add")
    assert props(tool)["b"] == {"type": "integer", "description": "the second."}
    assert await tool.invoke(tool.validate('{"a": 2, "b": 40}')) == 42
    with pytest.raises(ValueError, match="duplicate tool names"):
        Agent(tools=[add, add])


# --- docstrings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "names", "summary", "params"),
    [
        (
            "Book a table. restaurant: where. people: how many guests.",
            ["restaurant", "people"],
            "Book a table.",
            {"restaurant": "where.", "people": "how many guests."},
        ),
        (
            "Book a table.\n\nLonger text.\n\nArgs:\n    restaurant (str): where\n"
            "        exactly.\n    people: how many.\n\nReturns:\n    a confirmation.",
            ["self", "restaurant", "people"],
            "Book a table.",
            {"restaurant": "where exactly.", "people": "how many."},
        ),
        (
            # A parameter name followed by a colon inside prose is not a description.
            "Search the catalogue for a query: returns ids.\n\nArgs:\n    query: the text.",
            ["query"],
            "Search the catalogue for a query: returns ids.",
            {"query": "the text."},
        ),
        ("Greet.", ["name"], "Greet.", {}),
        ("", ["name"], "", {}),
        ("First line\ncontinues.\n\nSecond paragraph.", [], "First line continues.", {}),
    ],
)
def test_parse_docstring(doc: str, names: list[str], summary: str, params: dict[str, str]) -> None:
    assert parse_docstring(doc, names) == (summary, params)


# --- validation -----------------------------------------------------------------------------


def test_validate_converts_to_python_types() -> None:
    args = build_tool(everything).validate(
        {
            "text": "hi",
            "count": 3,
            "ratio": 1,
            "flag": False,
            "size": "large",
            "color": "blue",
            "maybe": None,
            "numbers": [1, 2],
            "guest": {"name": "Ann", "address": {"street": "Main", "zip_code": 1}},
            "extras": {"cake": True, "note": "birthday"},
            "payment": {"amount": 9.5},
        }
    )
    assert args["color"] is Color.BLUE
    assert args["guest"] == Guest("Ann", Address("Main", 1))
    assert args["payment"] == Payment(amount=9.5)
    assert args["extras"] == {"cake": True, "note": "birthday"}
    assert args["ratio"] == 1.0 and isinstance(args["ratio"], float)
    assert (args["limit"], args["tag"]) == (5, None)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ('{"restaurant": "Luigi"}', r"people: Field required"),
        ('{"restaurant": "Luigi", "people": "two"}', r"people: Input should be a valid integer"),
        ('{"restaurant": "Luigi", "people": 2.5}', r"people: .*fractional part"),
        ('{"restaurant": "Luigi", "people": 2, "time": "8pm"}', r"time: Extra inputs"),
        ('{"restaurant": "Luigi", "people": 2', r"not valid JSON"),
        ("[1, 2]", r"must be a JSON object"),
        ("null", r"must be a JSON object"),
        ('{"restaurant": ["x"], "people": 2}', r"restaurant: Input should be a valid string"),
    ],
)
def test_bad_arguments_raise_readable_errors(arguments: str, message: str) -> None:
    tool = next(t for t in Concierge().tools if t.name == "book_table")
    with pytest.raises(ToolArgumentsError, match=message) as info:
        tool.validate(arguments)
    assert isinstance(info.value, ValueError)
    assert "Traceback" not in str(info.value) and "pydantic" not in str(info.value)


def test_nested_errors_name_their_path() -> None:
    tool = build_tool(everything)
    good = json.loads(
        '{"text": "a", "count": 1, "ratio": 1, "flag": true, "size": "small", "color": "red",'
        '"maybe": 1, "numbers": [], "extras": {"cake": false, "note": ""},'
        '"payment": {"amount": 1},'
        '"guest": {"name": "A", "address": {"street": "S", "zip_code": 1}}}'
    )
    tool.validate(good)
    bad = {**good, "guest": {"name": "A", "address": {"street": "S", "zip_code": "x"}}}
    with pytest.raises(ToolArgumentsError, match=r"guest\.address\.zip_code"):
        tool.validate(bad)
    with pytest.raises(ToolArgumentsError, match=r"size: Input should be 'small' or 'large'"):
        tool.validate({**good, "size": "huge"})
    with pytest.raises(ToolArgumentsError, match=r"color: Input should be 'red' or 'blue'"):
        tool.validate({**good, "color": "green"})


# --- invocation -----------------------------------------------------------------------------


async def test_sync_tool_runs_off_the_event_loop() -> None:
    loop_thread = threading.get_ident()
    release = threading.Event()
    seen: dict[str, int] = {}

    @function_tool
    def blocking(x: int) -> int:
        seen["thread"] = threading.get_ident()
        # Only the event loop can set this; a tool run on the loop would deadlock here.
        assert release.wait(timeout=5)
        return x * 2

    tool = build_tool(blocking)
    task = asyncio.create_task(tool.invoke(tool.validate({"x": 21})))
    asyncio.get_running_loop().call_soon(release.set)  # runs after the task's first step
    assert await asyncio.wait_for(task, 5) == 42
    assert seen["thread"] != loop_thread


async def test_async_tools_run_concurrently() -> None:
    started: list[str] = []
    both_started = asyncio.Event()

    @function_tool
    async def step(name: str) -> str:
        started.append(name)
        if len(started) == 2:
            both_started.set()
        await asyncio.wait_for(both_started.wait(), 5)
        return name

    tool = build_tool(step)
    results = await asyncio.gather(tool.invoke({"name": "a"}), tool.invoke({"name": "b"}))
    assert list(results) == ["a", "b"]


async def test_per_tool_timeout_async_and_sync() -> None:
    never = asyncio.Event()

    @function_tool(timeout=0.05)
    async def hangs() -> str:
        await never.wait()
        return "unreachable"

    with pytest.raises(asyncio.TimeoutError):  # 3.10: not the builtin one
        await build_tool(hangs).invoke({})

    release = threading.Event()

    @function_tool(timeout=0.05)
    def hangs_in_thread() -> str:
        release.wait(timeout=5)
        return "late"

    try:
        with pytest.raises(asyncio.TimeoutError):  # 3.10: not the builtin one
            await build_tool(hangs_in_thread).invoke({})
    finally:
        release.set()


async def test_tool_exceptions_propagate_to_the_runner() -> None:
    @function_tool
    async def broken(x: int) -> int:
        raise RuntimeError(f"no table for {x}")

    with pytest.raises(RuntimeError, match="no table for 3"):
        await build_tool(broken).invoke({"x": 3})


# --- definition errors ----------------------------------------------------------------------


def test_missing_annotation_is_a_definition_error() -> None:
    with pytest.raises(ToolDefinitionError, match="'people' of book needs a type hint") as info:

        @function_tool
        def book(restaurant: str, people) -> str:  # type: ignore[no-untyped-def]
            return restaurant

    assert isinstance(info.value, TypeError)


def test_other_definition_errors() -> None:
    with pytest.raises(ToolDefinitionError, match="must match"):

        @function_tool(name="book a table")
        def book(x: int) -> None: ...

    with pytest.raises(ToolDefinitionError, match="unsupported parameter type"):

        @function_tool
        def takes_lock(lock: threading.Lock) -> None: ...

    with pytest.raises(ToolDefinitionError, match="recursive type Tree"):

        @function_tool
        def walk(tree: Tree) -> None: ...

    with pytest.raises(ToolDefinitionError, match="cannot resolve type hints"):

        @function_tool
        def unknown(x: NotDefinedAnywhere) -> None: ...  # type: ignore[name-defined]  # noqa: F821


@pytest.mark.skipif(
    sys.version_info >= (3, 12), reason="pydantic accepts typing.TypedDict on 3.12+"
)
def test_typing_typeddict_before_312_says_what_to_use() -> None:
    class Plain(typing.TypedDict):
        a: int

    def uses_plain(p: Plain) -> None: ...

    uses_plain.__annotations__["p"] = Plain  # a local class: give the resolved type
    with pytest.raises(ToolDefinitionError, match=r"typing_extensions\.TypedDict"):
        build_tool(uses_plain)
