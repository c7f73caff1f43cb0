"""`@function_tool`: schemas from type hints and docstrings, validation, invocation."""

from __future__ import annotations

import asyncio
import concurrent.futures
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

from duplex.agents import (
    AgentSession,
    EnergyVAD,
    FunctionCall,
    FunctionCallOutput,
    ToolCalled,
    ToolExecuted,
    tool_runner,
)
from duplex.agents.agent import Agent
from duplex.agents.errors import ToolArgumentsError, ToolDefinitionError
from duplex.agents.testing import MemoryTransport, Reply, ScriptedBackend, ScriptedCall
from duplex.agents.tool_runner import ToolRunner
from duplex.agents.tool_threads import ToolThreads
from duplex.agents.tools import (
    DEFAULT_TOOL_TIMEOUT,
    FunctionTool,
    build_tool,
    function_tool,
    is_tool,
    parse_docstring,
)

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


# --- hostile input: every call ends in exactly one readable output (issue 12) --------------


def _nested_list(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@function_tool
async def echo_n(n: int, note: str = "") -> str:
    """Echo a number."""
    return f"{n}{note}"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ("[" * 100_000, "nested deeper"),
        ('{"n": ' + "[" * 40 + "1" + "]" * 40 + "}", "nested deeper"),
        ('{"n": ' + "9" * 5000 + "}", "cannot be read"),
        ('{"n": 1, "note": "' + "x" * 200_000 + '"}', "characters long"),
        ({"n": _nested_list(100_000)}, "nested deeper"),
    ],
    ids=["deep-text", "deep-value", "huge-int", "too-long", "deep-dict"],
)
def test_hostile_arguments_are_refused_before_parsing(arguments: Any, message: str) -> None:
    with pytest.raises(ToolArgumentsError, match=message):
        build_tool(echo_n).validate(arguments)


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    deep_text = "[" * 500 + '\\"{' * 100
    assert build_tool(echo_n).validate(json.dumps({"n": 3, "note": deep_text})) == {
        "n": 3,
        "note": deep_text,
    }


def test_timeout_defaults_and_none_only_when_asked() -> None:
    def plain(x: int) -> int:
        return x

    assert build_tool(plain).timeout == DEFAULT_TOOL_TIMEOUT
    assert build_tool(echo_n).timeout == DEFAULT_TOOL_TIMEOUT
    direct = FunctionTool("t", "", {}, plain, build_tool(plain).model)
    assert direct.timeout == DEFAULT_TOOL_TIMEOUT

    @function_tool(timeout=None)
    async def forever() -> None:
        """Runs as long as it likes."""

    assert build_tool(forever).timeout is None


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str for you")

    __repr__ = __str__


class UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message either")


@function_tool
async def returns_unprintable() -> Any:
    """Returns something that cannot become text."""
    return Unprintable()


@function_tool
async def returns_unprintable_in_a_dict() -> Any:
    """Returns a dict holding something that cannot become text."""
    return {"value": Unprintable()}


@function_tool
async def raises_unprintable() -> None:
    """Raises an exception whose message cannot be shown."""
    raise UnprintableError()


@function_tool
async def returns_huge() -> str:
    """Returns far too much text."""
    return "y" * 1_000_000


class Outputs:
    """A sink recording every output, and the failures the runner reports."""

    def __init__(self) -> None:
        self.outputs: list[FunctionCallOutput] = []
        self.failures: list[BaseException] = []

    async def sink(self, call: FunctionCall, output: FunctionCallOutput, took: float) -> None:
        self.outputs.append(output)

    def fail(self, name: str, exc: BaseException) -> None:
        self.failures.append(exc)


async def test_runner_answers_every_hostile_call_exactly_once() -> None:
    tools = [
        build_tool(t)
        for t in (
            echo_n,
            returns_unprintable,
            returns_unprintable_in_a_dict,
            raises_unprintable,
            returns_huge,
        )
    ]
    out = Outputs()
    runner = ToolRunner(tools, out.sink, on_failure=out.fail)
    calls = {
        "deep": FunctionCall("c1", "echo_n", "[" * 100_000),
        "huge-int": FunctionCall("c2", "echo_n", '{"n": ' + "9" * 5000 + "}"),
        "unprintable": FunctionCall("c3", "returns_unprintable", "{}"),
        "unprintable-dict": FunctionCall("c4", "returns_unprintable_in_a_dict", "{}"),
        "raises-unprintable": FunctionCall("c5", "raises_unprintable", "{}"),
        "unknown": FunctionCall("c6", "x" * 10_000, "{}"),
        "huge-output": FunctionCall("c7", "returns_huge", "{}"),
        "fine": FunctionCall("c8", "echo_n", '{"n": 7}'),
    }
    for call in calls.values():
        runner.submit("r1", call)
    results = await runner.wait_batch("r1")
    by_call = {o.call_id: o for o in out.outputs}
    assert len(out.outputs) == len(calls) == len(by_call) == len(results)
    expect = {
        "deep": "nested deeper",
        "huge-int": "cannot be read",
        "unprintable": "cannot be shown",
        "unprintable-dict": "cannot be shown",
        "raises-unprintable": "UnprintableError",
        "unknown": "unknown tool",
    }
    for key, text in expect.items():
        output = by_call[calls[key].call_id]
        assert output.is_error and text in output.output, (key, output.output[:200])
    assert len(by_call["c7"].output) < 100_200 and "cut" in by_call["c7"].output
    assert by_call["c8"].output == "7" and not by_call["c8"].is_error
    assert out.failures == []


async def test_a_sink_that_fails_is_reported_not_swallowed() -> None:
    failures: list[BaseException] = []

    async def broken_sink(call: FunctionCall, output: FunctionCallOutput, took: float) -> None:
        raise RuntimeError("conversation is gone")

    runner = ToolRunner(
        [build_tool(echo_n)], broken_sink, on_failure=lambda n, e: failures.append(e)
    )
    runner.submit("r1", FunctionCall("c1", "echo_n", '{"n": 1}'))
    await runner.wait_batch("r1")
    assert [str(e) for e in failures] == ["conversation is gone"]


async def test_aclose_is_bounded_with_a_hung_tool_and_answers_it() -> None:
    never = asyncio.Event()
    release = threading.Event()

    @function_tool(timeout=None)
    async def hangs() -> str:
        """Never returns."""
        await never.wait()
        return "unreachable"

    @function_tool(timeout=None)
    def hangs_in_thread() -> str:
        """Never returns either (until the test ends)."""
        release.wait(timeout=30)
        return "late"

    out = Outputs()
    runner = ToolRunner(
        [build_tool(hangs), build_tool(hangs_in_thread)], out.sink, close_grace_s=0.05
    )
    runner.submit("r1", FunctionCall("c1", "hangs", "{}"))
    runner.submit("r1", FunctionCall("c2", "hangs_in_thread", "{}"))
    try:
        await asyncio.wait_for(runner.aclose(), 10)
    finally:
        release.set()
    assert sorted(o.call_id for o in out.outputs) == ["c1", "c2"]
    assert all(o.is_error and "cancelled" in o.output for o in out.outputs)


async def test_blocked_sync_tools_starve_neither_quick_tools_nor_getaddrinfo() -> None:
    loop = asyncio.get_running_loop()
    # A default executor as small as a 2-core machine's: 8 stuck threads would fill it.
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(8))
    release = threading.Event()

    @function_tool(timeout=0.05)
    def stuck() -> str:
        """Blocks its thread far past its timeout."""
        release.wait(timeout=60)
        return "late"

    @function_tool
    def quick_sync(x: int) -> int:
        """Answers at once, in a thread."""
        return x + 1

    out = Outputs()
    runner = ToolRunner([build_tool(stuck), build_tool(quick_sync), build_tool(echo_n)], out.sink)
    try:
        for i in range(8):
            runner.submit("r1", FunctionCall(f"s{i}", "stuck", "{}"))
        stuck_outputs = await asyncio.wait_for(runner.wait_batch("r1"), 30)
        assert all(o.is_error and "timed out" in o.output for o in stuck_outputs)
        runner.submit("r2", FunctionCall("q1", "quick_sync", '{"x": 1}'))
        runner.submit("r2", FunctionCall("q2", "echo_n", '{"n": 5}'))
        quick = await asyncio.wait_for(runner.wait_batch("r2"), 30)
        assert [o.output for o in quick] == ["2", "5"]
        infos = await asyncio.wait_for(loop.getaddrinfo("localhost", 80), 30)
        assert infos
    finally:
        release.set()


async def test_a_full_tool_pool_refuses_at_once_and_recovers() -> None:
    release = threading.Event()
    entered = threading.Semaphore(0)

    @function_tool(timeout=None)
    def blocking(x: int) -> int:
        """Holds its thread until released."""
        entered.release()
        release.wait(timeout=30)
        return x

    pool = ToolThreads(max_workers=2)
    out = Outputs()
    runner = ToolRunner([build_tool(blocking)], out.sink, threads=pool)
    try:
        runner.submit("r1", FunctionCall("b1", "blocking", '{"x": 1}'))
        runner.submit("r1", FunctionCall("b2", "blocking", '{"x": 2}'))
        for _ in range(2):
            await asyncio.to_thread(entered.acquire, True, 10)
        runner.submit("r2", FunctionCall("b3", "blocking", '{"x": 3}'))
        [refused] = await asyncio.wait_for(runner.wait_batch("r2"), 10)
        assert refused.is_error and "busy" in refused.output
        release.set()
        assert [o.output for o in await asyncio.wait_for(runner.wait_batch("r1"), 10)] == [
            "1",
            "2",
        ]
        runner.submit("r3", FunctionCall("b4", "blocking", '{"x": 4}'))
        [again] = await asyncio.wait_for(runner.wait_batch("r3"), 10)
        assert again.output == "4"
    finally:
        release.set()


# --- the same through a whole session ------------------------------------------------------


class Desk(Agent):
    instructions = "You run tools."

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    @function_tool
    async def lookup(self, n: int) -> str:
        """Look a number up."""
        return f"found {n}"

    @function_tool(timeout=None)
    async def wait_forever(self) -> str:
        """Never returns."""
        await asyncio.Event().wait()
        return "unreachable"


async def _desk_session(replies: list[Reply]) -> tuple[AgentSession, ScriptedBackend]:
    backend = ScriptedBackend(replies)
    transport = MemoryTransport(input_rate=48000, output_rate=48000, playout="auto")
    session = AgentSession(agent=Desk(), backend=backend, vad=EnergyVAD())
    await session.start(transport)
    return session, backend


async def test_session_answers_hostile_calls_and_the_conversation_goes_on() -> None:
    session, backend = await _desk_session(
        [
            Reply(
                calls=(
                    ScriptedCall("lookup", "[" * 100_000),
                    ScriptedCall("lookup", '{"n": ' + "9" * 5000 + "}"),
                )
            ),
            Reply(text="Those arguments were broken.", audio_ms=60),
            Reply(text="Still here.", audio_ms=60),
        ]
    )
    executed: list[ToolExecuted] = []
    session.on(ToolExecuted, executed.append)
    try:
        await session.send_text("look it up")
        await backend.session.wait_for_call("create_response", count=2)
        assert len(executed) == 2 and all(e.output.is_error for e in executed)
        outputs = [o for o in session.conversation if isinstance(o, FunctionCallOutput)]
        assert sorted(o.call_id for o in outputs) == sorted(e.call.call_id for e in executed)
        await session.send_text("are you there?")
        await backend.session.wait_for_call("create_response", count=3)
    finally:
        await session.aclose()


async def test_session_close_is_bounded_with_a_tool_that_never_returns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tool_runner, "CLOSE_GRACE_S", 0.05)
    session, _ = await _desk_session([Reply(calls=(ScriptedCall("wait_forever"),))])
    called = session.next_event(ToolCalled)
    executed = session.next_event(ToolExecuted)
    await session.send_text("wait")
    await asyncio.wait_for(called, 10)
    await asyncio.wait_for(session.aclose(), 15)
    output = (await asyncio.wait_for(executed, 1)).output
    assert output.is_error and "cancelled" in output.output
