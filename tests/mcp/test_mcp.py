"""MCP servers as tool providers: a real server process (the SDK's own server API) per test."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence

import pytest

from duplex.agents import Agent, AgentSession
from duplex.agents.conversation import FunctionCallOutput
from duplex.agents.errors import ToolProviderError
from duplex.agents.events import ToolExecuted
from duplex.agents.testing import MemoryTransport, Reply, ScriptedBackend, ScriptedCall
from duplex.plugins.mcp import MCPServerHTTP, MCPServerStdio

from .conftest import SERVER, free_port

pytestmark = pytest.mark.timeout(60)


def stdio_server(**options: object) -> MCPServerStdio:
    return MCPServerStdio(
        sys.executable,
        [SERVER, "stdio"],
        name="tools",
        errlog=open(os.devnull, "w"),
        **options,  # type: ignore[arg-type]
    )


async def start(
    replies: Sequence[Reply], *servers: MCPServerStdio | MCPServerHTTP
) -> tuple[AgentSession, ScriptedBackend]:
    backend = ScriptedBackend(list(replies))
    session = AgentSession(agent=Agent(mcp_servers=list(servers)), backend=backend, vad=None)
    await session.start(MemoryTransport(output_rate=24000, playout="auto"))
    return session, backend


async def run_calls(
    session: AgentSession, calls: Sequence[ScriptedCall]
) -> dict[str, FunctionCallOutput]:
    """Ask for the scripted reply that makes ``calls`` and return each call's output by tool."""
    done: list[ToolExecuted] = []
    finished = asyncio.Event()

    def seen(ev: object) -> None:
        if isinstance(ev, ToolExecuted):
            done.append(ev)
            if len(done) == len(calls):
                finished.set()

    session.on(ToolExecuted, seen)
    await session.generate_reply()
    await asyncio.wait_for(finished.wait(), 30)
    return {ev.call.name: ev.output for ev in done}


async def test_tools_are_listed_with_their_schemas() -> None:
    session, backend = await start([], stdio_server())
    tools = {t.name: t for t in backend.session.tools}
    assert {"add", "book_table", "count_words", "fail", "slow", "die", "pid"} <= set(tools)
    book = tools["book_table"].parameters
    assert book["properties"]["people"]["type"] == "integer"
    assert book["properties"]["guest"]["type"] == "object"
    assert book["properties"]["guest"]["required"] == ["name"]
    assert book["properties"]["seating"]["enum"] == ["inside", "terrace"]
    assert set(book["required"]) == {"date", "people", "guest"}
    words = tools["count_words"].parameters["properties"]["words"]
    assert words == {"items": {"type": "string"}, "type": "array"}
    assert tools["add"].description == "Add two integers."
    await session.aclose()


async def test_calls_results_errors_and_bad_arguments_each_give_one_output() -> None:
    calls = (
        ScriptedCall("book_table", {"date": "Friday", "people": 4, "guest": {"name": "Ann"}}),
        ScriptedCall("count_words", {"words": ["a", "B", "b"], "ignore_case": True}),
        ScriptedCall("fail", {"reason": "closed"}),
        ScriptedCall("add", {"a": "one", "b": 2}),
    )
    session, backend = await start([Reply(calls=calls), Reply(text="done")], stdio_server())
    outputs = await run_calls(session, calls)
    assert outputs["book_table"].output == "Booked 4 at inside on Friday for Ann."
    assert not outputs["book_table"].is_error
    assert outputs["count_words"].output.replace(" ", "").replace("\n", "") == '{"a":1,"b":2}'
    assert outputs["fail"].is_error and "fail" in outputs["fail"].output
    assert outputs["add"].is_error and "a: 'one' is not of type 'integer'" in outputs["add"].output
    # The follow-up reply was asked for once, after all four outputs reached the backend.
    follow = await backend.session.wait_for_call("create_response", count=2)
    assert follow is not None
    sent = [it for it in backend.session.mirror if isinstance(it, FunctionCallOutput)]
    assert sorted(o.call_id for o in sent) == sorted({o.call_id for o in sent})
    assert len(sent) == 4
    await session.aclose()


async def test_a_server_that_dies_mid_call_gives_an_error_output_and_the_call_goes_on() -> None:
    calls = (ScriptedCall("die", {}),)
    after = (ScriptedCall("add", {"a": 1, "b": 2}),)
    session, backend = await start(
        [Reply(calls=calls), Reply(text="sorry"), Reply(calls=after), Reply(text="still here")],
        stdio_server(),
    )
    outputs = await run_calls(session, calls)
    assert outputs["die"].is_error and "stopped during the call" in outputs["die"].output
    await backend.session.wait_for_call("create_response", count=2)
    # Later calls fail fast with a readable output; the session keeps answering.
    outputs = await run_calls(session, after)
    assert outputs["add"].is_error and "not running" in outputs["add"].output
    await backend.session.wait_for_call("create_response", count=4)
    assert not session.closed.is_set()
    await session.aclose()


async def test_a_slow_call_times_out_into_an_output() -> None:
    calls = (ScriptedCall("slow", {"seconds": 30}),)
    session, _ = await start([Reply(calls=calls), Reply(text="ok")], stdio_server(timeout=0.5))
    outputs = await run_calls(session, calls)
    assert outputs["slow"].is_error and "timed out" in outputs["slow"].output.lower()
    await session.aclose()


async def test_the_server_process_stops_with_the_session() -> None:
    calls = (ScriptedCall("pid", {}),)
    session, _ = await start([Reply(calls=calls), Reply(text="ok")], stdio_server())
    pid = int((await run_calls(session, calls))["pid"].output)
    os.kill(pid, 0)  # alive during the call
    await session.aclose()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        assert loop.time() < deadline, "the MCP server outlived its session"
        await asyncio.sleep(0.05)  # process exit has no event to await from here


async def test_a_tool_list_change_reaches_the_backend() -> None:
    calls = (ScriptedCall("learn_tool", {}),)
    session, backend = await start([Reply(calls=calls), Reply(text="ok")], stdio_server())
    assert "late_tool" not in {t.name for t in backend.session.tools}
    await run_calls(session, calls)
    update = await backend.session.wait_for_call("update_tools")
    assert "late_tool" in update.args["names"]
    assert "add" in update.args["names"]  # the whole list, not only the new tool
    await session.aclose()


async def test_streamable_http_server(http_server: str) -> None:
    calls = (ScriptedCall("add", {"a": 20, "b": 22}),)
    session, backend = await start(
        [Reply(calls=calls), Reply(text="ok")], MCPServerHTTP(http_server, name="remote")
    )
    assert "book_table" in {t.name for t in backend.session.tools}
    outputs = await run_calls(session, calls)
    assert outputs["add"].output == "42" and not outputs["add"].is_error
    await session.aclose()


async def test_servers_that_cannot_start_fail_the_start_clearly() -> None:
    missing = MCPServerStdio("/nonexistent/mcp-server", name="calendar")
    with pytest.raises(ToolProviderError, match="'calendar' could not start"):
        await start([], missing)
    nobody = MCPServerHTTP(f"http://127.0.0.1:{free_port()}/mcp", name="crm", connect_timeout=5)
    with pytest.raises(ToolProviderError, match="'crm'"):
        await start([], nobody)


async def test_tool_names_clashing_across_servers_are_refused_unless_prefixed() -> None:
    with pytest.raises(ToolProviderError, match="share a name"):
        await start([], stdio_server(), stdio_server())
    session, backend = await start([], stdio_server(), stdio_server(tool_prefix="b_"))
    names = {t.name for t in backend.session.tools}
    assert {"add", "b_add"} <= names
    await session.aclose()
