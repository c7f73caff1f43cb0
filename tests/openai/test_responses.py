"""Responses: requests matched to responses, policies, cancellation, text fallback, metrics."""

from __future__ import annotations

import asyncio

import pytest

from duplex.agents.backend import (
    AudioDelta,
    FunctionCallRequested,
    RateLimits,
    ResponseDone,
    ResponseStarted,
    TextDelta,
)
from duplex.agents.conversation import Conversation, FunctionCall, Message, TextPart
from duplex.agents.errors import BackendErrorException
from duplex.backends.openai import OpenAIResponseHandle

from .helpers import Collector, backend, ids
from .server import RealtimeTestServer, Reply


async def connect(server: RealtimeTestServer, **options: object):  # type: ignore[no-untyped-def]
    conv = Conversation()
    conv.add_message("user", "Hi")
    session = await backend(server, turn_detection=None, **options).connect(
        instructions="You are terse.", tools=[], conversation=conv
    )
    return session, Collector(session, conv)


@pytest.mark.parametrize("echo", [True, False])
async def test_request_matched_with_or_without_metadata_echo(
    server: RealtimeTestServer, echo: bool
) -> None:
    server.echo_metadata = echo
    session, col = await connect(server)
    handle = await session.create_response(instructions="Say hi in French.", tool_choice="none")
    rid = await asyncio.wait_for(handle.created, 5)
    done = await asyncio.wait_for(handle.done, 5)
    assert done.response_id == rid and done.status == "completed"
    started = await col.wait_for(ResponseStarted)
    assert started.request_id == handle.request_id
    create = server.of_type("response.create")[0]
    assert create["event_id"] == handle.request_id
    # per-response instructions keep the session's (OpenAI would replace them)
    assert create["response"]["instructions"] == "You are terse.\n\nSay hi in French."
    assert create["response"]["tool_choice"] == "none"
    assert isinstance(handle, OpenAIResponseHandle) and handle.metrics is not None
    m = handle.metrics
    assert m.response_id == rid and m.request_id == handle.request_id
    assert m.time_to_first_audio is not None and m.time_to_first_text is not None
    assert m.duration is not None and m.duration >= m.time_to_first_audio
    assert m.usage == done.usage and m.usage is not None and m.usage.input_cached_tokens == 16
    assert m.tokens_per_second and m.tokens_per_second > 0 and not m.cancelled
    assert session.response_metrics[-1] is m
    assert col.of(RateLimits) and col.of(RateLimits)[0].limits[0]["name"] == "requests"
    await session.aclose()
    await col.aclose()


async def test_keep_both_queues_and_sends_after_the_active_one(server: RealtimeTestServer) -> None:
    hold = Reply(hold_after_ms=200)
    server.replies.extend([hold, Reply(text="Second.")])
    session, col = await connect(server)
    first = await session.create_response()
    await asyncio.wait_for(first.created, 5)
    second = await session.create_response()
    await col.wait_for(AudioDelta)
    assert len(server.of_type("response.create")) == 1  # not sent while one is active
    hold.release.set()
    await asyncio.wait_for(second.done, 5)
    assert (await first.done).status == "completed"
    assert len(server.of_type("response.create")) == 2
    assert server.errors_sent["conversation_already_has_active_response"] == 0
    await session.aclose()
    await col.aclose()


async def test_response_policy_is_a_deprecated_alias_that_only_queues(
    server: RealtimeTestServer,
) -> None:
    """The session owns the reply policy: the backend's old option warns and changes nothing
    (a second request waits for the active one; nothing is cancelled or refused)."""
    hold = Reply(hold_after_ms=100)
    server.replies.extend([hold, Reply(text="Second.")])
    with pytest.warns(DeprecationWarning, match="reply_policy"):
        session, col = await connect(server, response_policy="cancel_existing")
    first = await session.create_response()
    await col.wait_for(AudioDelta)
    second = await session.create_response()
    assert len(server.of_type("response.create")) == 1
    hold.release.set()
    assert (await asyncio.wait_for(first.done, 5)).status == "completed"
    assert (await asyncio.wait_for(second.done, 5)).status == "completed"
    assert server.of_type("response.cancel") == []
    assert sum(server.errors_sent.values()) == 0
    await session.aclose()
    await col.aclose()


async def test_request_racing_a_server_response_is_retried(server: RealtimeTestServer) -> None:
    """The server starts a reply on its own just as we ask for one: the refusal
    (conversation_already_has_active_response) fails nothing; ours is sent after."""
    session, col = await connect(server)
    warmup = await session.create_response()  # the server has shown it echoes metadata
    await asyncio.wait_for(warmup.done, 5)
    held = Reply(hold_after_ms=100)
    server.replies.extend([held, Reply(text="Ours.")])
    server.race_next_create = True
    handle = await session.create_response(instructions="Answer the question.")
    await server.wait_until(
        lambda: server.errors_sent["conversation_already_has_active_response"] == 1
    )
    assert not handle.created.done()
    held.release.set()
    done = await asyncio.wait_for(handle.done, 5)
    assert done.status == "completed" and handle.metrics is not None
    assert handle.metrics.request_id == handle.request_id
    creates = server.of_type("response.create")
    assert len(creates) == 3 and creates[1]["event_id"] == creates[2]["event_id"]
    assert "Answer the question." in creates[2]["response"]["instructions"]
    started = col.of(ResponseStarted)
    assert [s.request_id for s in started] == [warmup.request_id, None, handle.request_id]
    assert not [e for e in col.events if type(e).__name__ == "BackendError"]
    await session.aclose()
    await col.aclose()


async def test_race_without_metadata_echo_is_answered_by_the_server_reply(
    server: RealtimeTestServer,
) -> None:
    """Without an echo the racing server reply cannot be told apart: it answers the
    request (FIFO), and the refusal of the duplicate is not an error."""
    server.echo_metadata = False
    session, col = await connect(server)
    server.race_next_create = True
    handle = await session.create_response()
    done = await asyncio.wait_for(handle.done, 5)
    assert done.status == "completed"
    await server.wait_until(
        lambda: server.errors_sent["conversation_already_has_active_response"] == 1
    )
    assert not [e for e in col.events if type(e).__name__ == "BackendError"]
    await session.aclose()
    await col.aclose()


async def test_cancel_response_is_never_sent_for_an_ended_response(
    server: RealtimeTestServer,
) -> None:
    session, col = await connect(server)
    handle = await session.create_response()
    await asyncio.wait_for(handle.done, 5)
    await col.wait_for(ResponseDone)
    await session.cancel_response()
    await session.cancel_response()
    assert server.of_type("response.cancel") == []
    assert server.errors_sent["response_cancel_not_active"] == 0
    await session.aclose()
    await col.aclose()


async def test_cancel_response_cancels_once(server: RealtimeTestServer) -> None:
    server.replies.append(Reply(hold_after_ms=200, audio_ms=1000))
    session, col = await connect(server)
    handle = await session.create_response()
    await col.wait_for(AudioDelta)
    await session.cancel_response()
    await session.cancel_response()  # already being cancelled: nothing more is sent
    done = await asyncio.wait_for(handle.done, 5)
    assert done.status == "cancelled" and done.reason == "client_cancelled"
    assert handle.metrics is not None and handle.metrics.cancelled
    assert len(server.of_type("response.cancel")) == 1
    assert server.of_type("response.cancel")[0]["response_id"] == done.response_id
    assert server.errors_sent["response_cancel_not_active"] == 0
    reply = col.conversation.items[-1]
    assert isinstance(reply, Message) and reply.complete and 0 < reply.audio_ms < 1000
    await session.aclose()
    await col.aclose()


async def test_cancel_before_created_cancels_on_creation(server: RealtimeTestServer) -> None:
    server.replies.append(Reply(hold_after_ms=100))
    session, col = await connect(server)
    handle = await session.create_response()
    await session.cancel_response()  # sent, not created yet
    done = await asyncio.wait_for(handle.done, 5)
    assert done.status == "cancelled"
    assert server.errors_sent["response_cancel_not_active"] == 0
    await session.aclose()
    await col.aclose()


async def test_text_instead_of_audio_is_delivered_as_text(server: RealtimeTestServer) -> None:
    server.replies.append(Reply(text="I can only type right now.", as_text=True))
    session, col = await connect(server)
    handle = await session.create_response()
    await asyncio.wait_for(handle.done, 5)
    await col.wait_for(ResponseDone)
    assert not col.of(AudioDelta)
    assert "".join(t.text for t in col.of(TextDelta)) == "I can only type right now."
    reply = col.conversation.items[-1]
    assert isinstance(reply, Message) and reply.content == (TextPart("I can only type right now."),)
    assert ids(session.remote_items) == ids(col.conversation)
    # it replays as text too: the next sync leaves it alone
    n = len(server.received)
    await session.sync(col.conversation)
    assert len(server.received) == n
    await session.aclose()
    await col.aclose()


async def test_text_modality(server: RealtimeTestServer) -> None:
    server.replies.append(Reply(text="Typed answer."))
    session, col = await connect(server, modality="text")
    assert not session_caps(server).audio_output
    handle = await session.create_response()
    await asyncio.wait_for(handle.done, 5)
    await col.wait_for(ResponseDone)
    assert server.current.session["output_modalities"] == ["text"]
    assert "".join(t.text for t in col.of(TextDelta)) == "Typed answer."
    await session.aclose()
    await col.aclose()


def session_caps(server: RealtimeTestServer):  # type: ignore[no-untyped-def]
    return backend(server, modality="text").capabilities


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_function_calls_are_assembled_from_deltas(
    server: RealtimeTestServer, dialect: str
) -> None:
    server.replies.append(
        Reply(
            text="",
            function_calls=(
                ("get_weather", '{"city": "Paris", "unit": "celsius"}'),
                ("get_time", '{"tz": "Europe/Paris"}'),
            ),
        )
    )
    session, col = await connect(server, dialect=dialect)
    handle = await session.create_response()
    await asyncio.wait_for(handle.done, 5)
    await col.wait_for(ResponseDone)
    calls = col.of(FunctionCallRequested)
    assert [(c.name, c.arguments) for c in calls] == [
        ("get_weather", '{"city": "Paris", "unit": "celsius"}'),
        ("get_time", '{"tz": "Europe/Paris"}'),
    ]
    assert all(c.response_id == handle.created.result() for c in calls)
    items = [it for it in col.conversation if isinstance(it, FunctionCall)]
    assert [(i.id, i.call_id, i.arguments) for i in items] == [
        (c.item_id, c.call_id, c.arguments) for c in calls
    ]
    assert items == [it for it in session.remote_items if isinstance(it, FunctionCall)]
    await session.aclose()
    await col.aclose()


async def test_failed_response_reports_status_and_error(server: RealtimeTestServer) -> None:
    server.replies.append(Reply(status="failed"))
    session, col = await connect(server)
    handle = await session.create_response()
    done = await asyncio.wait_for(handle.done, 5)
    assert done.status == "failed" and done.error == "server_error"
    assert handle.metrics is not None and handle.metrics.error == "server_error"
    await session.aclose()
    await col.aclose()


async def test_closed_session_refuses_requests(server: RealtimeTestServer) -> None:
    session, col = await connect(server)
    await session.aclose()
    from duplex.agents.errors import SessionClosedError

    with pytest.raises(SessionClosedError):
        await session.create_response()
    with pytest.raises((SessionClosedError, BackendErrorException)):
        await session.sync(Conversation())
    await col.aclose()
