"""ChatCompletionsLLM against a scripted SSE server streaming in vLLM's chunk shape."""

from __future__ import annotations

import asyncio
import json

import pytest

from duplex.agents.stages import LLMChunk
from duplex.backends.cascade import (
    ChatCompletionsLLM,
    LLMError,
    TextChunk,
    ToolCallChunk,
    UsageChunk,
)

from .chat_server import Call, ChatServer, Cut, Error, Gate, Raw, RawBytes, Text, Trickle

MESSAGES = [{"role": "user", "content": "Weather in Paris?"}]
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
]


async def collect(llm: ChatCompletionsLLM, **kw: object) -> list[LLMChunk]:
    return [c async for c in llm.stream(MESSAGES, **kw)]  # type: ignore[arg-type]


async def test_text_usage_and_request_shape(chat_server: ChatServer) -> None:
    chat_server.script(Text("Hello"), Text(" there."))
    llm = ChatCompletionsLLM(chat_server.url, "Qwen/Qwen3-8B", api_key="sk-test")
    try:
        chunks = await collect(llm, tools=TOOLS, tool_choice="get_weather")
    finally:
        await llm.aclose()
    assert "".join(c.text for c in chunks if isinstance(c, TextChunk)) == "Hello there."
    usage = [c.usage for c in chunks if isinstance(c, UsageChunk)]
    assert usage and (usage[0].input_tokens, usage[0].output_tokens) == (42, 7)
    req = chat_server.requests[0]
    assert req.body["stream"] is True and req.body["stream_options"] == {"include_usage": True}
    assert req.body["tools"] == TOOLS and req.body["model"] == "Qwen/Qwen3-8B"
    assert req.body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert req.headers["Authorization"] == "Bearer sk-test"
    assert "sk-test" not in repr(llm)


async def test_no_api_key_no_header_and_no_tools_field(chat_server: ChatServer) -> None:
    llm = ChatCompletionsLLM(chat_server.url.removesuffix("/v1"), "m")  # root URL works too
    try:
        await collect(llm, tool_choice="auto")
    finally:
        await llm.aclose()
    req = chat_server.requests[0]
    assert "Authorization" not in req.headers
    assert "tools" not in req.body and "tool_choice" not in req.body


async def test_tool_call_fragments_are_assembled_by_index(chat_server: ChatServer) -> None:
    args0, args1 = json.dumps({"city": "Paris", "unit": "celsius"}), json.dumps({"city": "Rome"})
    chat_server.script(
        Text("Let me check."), Call("get_weather", args0, parts=5), Call("get_weather", args1)
    )
    llm = ChatCompletionsLLM(chat_server.url, "m")
    try:
        chunks = await collect(llm, tools=TOOLS)
    finally:
        await llm.aclose()
    calls = [c for c in chunks if isinstance(c, ToolCallChunk)]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris", "unit": "celsius"}),
        ("get_weather", {"city": "Rome"}),
    ]
    assert all(c.call_id.startswith("chatcmpl-tool-") for c in calls)
    assert calls[0].call_id != calls[1].call_id


async def test_null_and_missing_fields_are_tolerated(chat_server: ChatServer) -> None:
    chat_server.script(
        Raw('{"choices": [{"delta": null, "finish_reason": null}]}'),
        Raw('{"choices": null, "usage": null}'),
        Raw('{"choices": [{"delta": {"content": null, "tool_calls": null}}]}'),
        # No index, whole call in one delta, arguments as an object (Ollama-style).
        Raw(
            json.dumps(
                {
                    "choices": [
                        {
                            "delta": {
                                "tool_calls": [
                                    {"id": "c1", "function": {"name": "f", "arguments": {"a": 1}}}
                                ]
                            }
                        }
                    ]
                }
            )
        ),
        Raw('{"choices": [{"delta": {"content": "ok"}}]}'),
    )
    llm = ChatCompletionsLLM(chat_server.url, "m")
    try:
        chunks = await collect(llm)
    finally:
        await llm.aclose()
    assert [c for c in chunks if isinstance(c, ToolCallChunk)] == [
        ToolCallChunk("c1", "f", '{"a": 1}')
    ]
    assert [c.text for c in chunks if isinstance(c, TextChunk)] == ["ok"]


async def test_http_error_is_typed(chat_server: ChatServer) -> None:
    chat_server.http_error = (
        404,
        {
            "object": "error",
            "message": "The model `x` does not exist.",
            "type": "NotFoundError",
            "code": 404,
        },
    )
    llm = ChatCompletionsLLM(chat_server.url, "x")
    try:
        with pytest.raises(LLMError) as err:
            await collect(llm)
    finally:
        await llm.aclose()
    assert err.value.code == "404" and "does not exist" in str(err.value)
    assert not err.value.recoverable


async def test_stream_cut_mid_tool_call_is_typed(chat_server: ChatServer) -> None:
    chat_server.script(Call("get_weather", '{"city": "Paris"}', parts=3), Cut())
    llm = ChatCompletionsLLM(chat_server.url, "m")
    try:
        with pytest.raises(LLMError) as err:
            await collect(llm, tools=TOOLS)
    finally:
        await llm.aclose()
    assert err.value.code == "llm_stream_cut" and "mid-tool-call" in str(err.value)


async def test_error_chunk_mid_stream_is_typed(chat_server: ChatServer) -> None:
    chat_server.script(Text("Hel"), Error("CUDA out of memory"))
    llm = ChatCompletionsLLM(chat_server.url, "m")
    try:
        with pytest.raises(LLMError, match="CUDA out of memory"):
            await collect(llm)
    finally:
        await llm.aclose()


async def test_closing_the_stream_disconnects_so_the_server_stops(chat_server: ChatServer) -> None:
    gate = asyncio.Event()
    chat_server.script(Text("A long answer"), Gate(gate), Text(" never sent."))
    llm = ChatCompletionsLLM(chat_server.url, "m")
    try:
        stream = llm.stream(MESSAGES)
        first = await anext(stream)
        assert first == TextChunk("A long answer")
        await stream.aclose()  # type: ignore[attr-defined]
        await asyncio.wait_for(chat_server.requests[0].disconnected.wait(), 5)
    finally:
        await llm.aclose()
    assert not chat_server.requests[0].finished.is_set()


# --- hostile or broken servers: always a typed LLMError, never a hang (issue 12) -----------


@pytest.mark.parametrize(
    "data",
    [
        '{"choices": 5}',
        '{"choices": [{"delta": "text"}]}',
        '{"choices": [{"delta": {"tool_calls": {"index": 0}}}]}',
        '{"choices": [{"delta": {"tool_calls": [{"index": 0, "function": "f"}]}}]}',
        '{"choices": [{"delta": {"tool_calls": [{"index": 0, "id": 7}]}}]}',
        '{"choices": [], "usage": {"prompt_tokens": "many"}}',
        '{"choices": [], "usage": {"prompt_tokens": 1e400}}',
        '{"choices": [], "usage": {"prompt_tokens_details": {"cached_tokens": -1}}}',
        '{"choices": [], "usage": {"prompt_tokens": ' + "9" * 5000 + "}}",
        "[" * 100_000 + "]" * 100_000,
        '{"a": ' * 50_000 + "1" + "}" * 50_000,
        '"just a string"',
        "null",
    ],
    ids=lambda d: d[:40],
)
async def test_wrong_shaped_chunks_are_llm_errors(chat_server: ChatServer, data: str) -> None:
    chat_server.script(Text("Hi."), Raw(data))
    llm = ChatCompletionsLLM(chat_server.url, "m")
    try:
        with pytest.raises(LLMError) as err:
            await collect(llm)
    finally:
        await llm.aclose()
    assert err.value.code == "llm_bad_chunk"


@pytest.mark.parametrize("terminated", [True, False], ids=["line", "unterminated"])
async def test_lines_over_512_kb_are_llm_errors(chat_server: ChatServer, terminated: bool) -> None:
    line = b"data: " + b"x" * (600 * 1024) + (b"\n\n" if terminated else b"")
    chat_server.script(Text("Hi."), RawBytes(line), Gate(asyncio.Event()))
    llm = ChatCompletionsLLM(chat_server.url, "m")
    try:
        with pytest.raises(LLMError) as err:
            await collect(llm)
    finally:
        await llm.aclose()
    assert err.value.code == "llm_bad_chunk" and "512" not in err.value.code
    assert "larger than" in str(err.value) or "longer than" in str(err.value)


async def test_many_data_lines_cannot_grow_an_event_past_the_limit(chat_server: ChatServer) -> None:
    line = b"data: " + b"y" * 1000 + b"\n"
    chat_server.script(RawBytes(line * 600 + b"\n"))
    llm = ChatCompletionsLLM(chat_server.url, "m")
    try:
        with pytest.raises(LLMError, match="larger than") as err:
            await collect(llm)
    finally:
        await llm.aclose()
    assert err.value.code == "llm_bad_chunk"


async def test_a_server_trickling_bytes_times_out(chat_server: ChatServer) -> None:
    event = b'data: {"choices": [{"delta": {"content": "slow"}}]}\n\n'
    chat_server.script(Text("Hi."), Trickle(event * 20, interval_s=0.02))
    llm = ChatCompletionsLLM(chat_server.url, "m", read_timeout_s=0.5)
    try:
        with pytest.raises(LLMError) as err:
            await collect(llm)
    finally:
        await llm.aclose()
    assert err.value.code == "llm_timeout"
    await asyncio.wait_for(chat_server.requests[0].disconnected.wait(), 10)


async def test_a_server_sending_keepalives_but_no_events_times_out(chat_server: ChatServer) -> None:
    chat_server.script(Text("Hi."), Trickle(b": ping\n" * 400, interval_s=0.01))
    llm = ChatCompletionsLLM(chat_server.url, "m", read_timeout_s=0.5)
    try:
        with pytest.raises(LLMError) as err:
            await collect(llm)
    finally:
        await llm.aclose()
    assert err.value.code == "llm_timeout"


@pytest.mark.parametrize("where", ["headers", "body"])
async def test_a_silent_server_times_out(chat_server: ChatServer, where: str) -> None:
    never = asyncio.Event()
    if where == "headers":
        chat_server.hold_headers = never
    chat_server.script(Text("Hi."), Gate(never))
    llm = ChatCompletionsLLM(chat_server.url, "m", read_timeout_s=0.3)
    assert ChatCompletionsLLM(chat_server.url, "m").read_timeout_s == 30.0  # finite by default
    try:
        with pytest.raises(LLMError) as err:
            await collect(llm)
    finally:
        await llm.aclose()
    assert err.value.code == "llm_timeout"


async def test_the_client_works_after_every_kind_of_failure(chat_server: ChatServer) -> None:
    chat_server.script(Raw('{"choices": 5}'))
    chat_server.script(Text("Fine again."))
    llm = ChatCompletionsLLM(chat_server.url, "m")
    try:
        with pytest.raises(LLMError):
            await collect(llm)
        chunks = await collect(llm)
    finally:
        await llm.aclose()
    assert [c.text for c in chunks if isinstance(c, TextChunk)] == ["Fine again."]


@pytest.mark.parametrize("failure", ["http_401", "cut", "refused", "bad_chunk"])
async def test_the_api_key_is_in_no_traceback_even_with_locals(
    chat_server: ChatServer, failure: str
) -> None:
    import traceback

    key = "sk-very-secret-key-123"
    url = chat_server.url
    if failure == "http_401":
        chat_server.http_error = (401, {"error": {"message": "bad key", "code": "invalid_key"}})
    elif failure == "cut":
        chat_server.script(Text("Hi."), Cut())
    elif failure == "bad_chunk":
        chat_server.script(Raw('{"choices": 5}'))
    else:
        await chat_server.stop()
    llm = ChatCompletionsLLM(url, "m", api_key=key)
    try:
        with pytest.raises(LLMError) as err:
            await collect(llm)
    finally:
        await llm.aclose()
    exc = err.value
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_name != "stream":
        tb = tb.tb_next  # from the client's own frame on (this test's frames hold the key)
    assert tb is not None
    rendered = "".join(
        traceback.TracebackException(type(exc), exc, tb, capture_locals=True).format(chain=True)
    )
    assert key not in rendered and key not in repr(exc)
    # The context chain a logger could walk holds none of aiohttp's request objects either.
    seen = exc.__cause__ or exc.__context__
    while seen is not None:
        assert key not in repr(seen) and key not in str(getattr(seen, "request_info", ""))
        seen = seen.__cause__ or seen.__context__
