"""The signaling server over real HTTP with real aiortc peers and real `AgentSession`s."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from duplex.agents import Agent, AgentSession, EnergyVAD, Message
from duplex.agents.app import AppSpec, PortInUseError, load_app
from duplex.agents.testing import Reply, ScriptedBackend
from duplex.plugins.webrtc import PlaygroundServer, WebRTCTransport
from duplex.plugins.webrtc.playground import app_factory
from tests.webrtc.conftest import EXAMPLE_ARG
from tests.webrtc.peer import ClientPeer


@pytest.fixture
async def scripted() -> ScriptedBackend:
    return ScriptedBackend([Reply(text=f"Reply {i}.", audio_ms=200) for i in range(8)])


@pytest.fixture
async def server(scripted: ScriptedBackend) -> AsyncIterator[PlaygroundServer]:
    spec = load_app(EXAMPLE_ARG)
    srv = PlaygroundServer(app_factory(spec, scripted, vad=EnergyVAD()), port=0, max_peers=3)
    await srv.start()
    yield srv
    await srv.aclose()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def dial(
    server: PlaygroundServer, http: aiohttp.ClientSession, session_id: str | None = None
) -> tuple[ClientPeer, dict[str, Any]]:
    client = ClientPeer()
    body: dict[str, Any] = {"type": "offer", "sdp": await client.offer()}
    if session_id is not None:
        body["session_id"] = session_id
    async with http.post(server.url + "offer", json=body) as r:
        assert r.status == 200, await r.text()
        answer = await r.json()
    await client.answer(answer["sdp"])
    return client, answer


async def test_page_static_files_and_health(
    server: PlaygroundServer, http: aiohttp.ClientSession
) -> None:
    async with http.get(server.url) as r:
        assert r.status == 200 and r.content_type == "text/html"
        assert '<script src="/static/playground.js">' in await r.text()
    for name, kind in [
        ("playground.js", "text/javascript"),
        ("playground.css", "text/css"),
        ("recorder-worklet.js", "text/javascript"),
    ]:
        async with http.get(server.url + "static/" + name) as r:
            assert r.status == 200 and r.content_type == kind
    async with http.get(server.url + "static/../server.py") as r:
        assert r.status == 404
    async with http.get(server.url + "health") as r:
        assert await r.json() == {"status": "ok", "peers": 0}


async def test_each_peer_gets_its_own_session(
    server: PlaygroundServer, http: aiohttp.ClientSession
) -> None:
    one, a = await dial(server, http)
    two, b = await dial(server, http)
    try:
        assert a["type"] == "answer" and a["session_id"] != b["session_id"]
        s1, s2 = server.peers[a["session_id"]].session, server.peers[b["session_id"]].session
        assert isinstance(s1, AgentSession) and isinstance(s2, AgentSession) and s1 is not s2
        assert (await one.next_message("session"))["session_id"] == a["session_id"]

        one.send({"type": "text", "text": "book it"})
        reply = await one.next_message("transcript")
        while not (reply["role"] == "assistant" and reply["final"]):
            reply = await one.next_message("transcript")
        assert reply["text"].startswith("Reply")
        await one.next_message("metrics")
        texts = [i.text for i in s1.conversation.items if isinstance(i, Message)]
        assert texts[0] == "book it"
        assert not any(isinstance(i, Message) for i in s2.conversation.items)
        async with http.get(server.url + "health") as r:
            assert (await r.json())["peers"] == 2
    finally:
        await one.close()
        await two.close()


async def test_bad_offers_get_400_and_the_server_keeps_serving(
    server: PlaygroundServer, http: aiohttp.ClientSession
) -> None:
    bad_bodies: list[tuple[Any, str]] = [
        ("{not json", "JSON"),
        ([1, 2], "object"),
        ({"type": "offer"}, "SDP"),
        ({"type": "answer", "sdp": "v=0\r\n"}, "offer"),
        ({"type": "offer", "sdp": "v=0\r\n", "session_id": "../etc"}, "session_id"),
        ({"type": "offer", "sdp": "hello"}, "not SDP"),
        ({"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"}, "audio"),
    ]
    for body, reason in bad_bodies:
        kwargs: dict[str, Any] = (
            {"data": body, "headers": {"Content-Type": "application/json"}}
            if isinstance(body, str)
            else {"json": body}
        )
        async with http.post(server.url + "offer", **kwargs) as r:
            assert r.status == 400, body
            assert reason in (await r.json())["error"]
    assert server.peers == {}
    client, _ = await dial(server, http)
    await client.close()


async def test_second_offer_for_a_live_session_is_409(
    server: PlaygroundServer, http: aiohttp.ClientSession
) -> None:
    first, answer = await dial(server, http, session_id="call-1")
    assert answer["session_id"] == "call-1"
    intruder = ClientPeer()
    body = {"type": "offer", "sdp": await intruder.offer(), "session_id": "call-1"}
    async with http.post(server.url + "offer", json=body) as r:
        assert r.status == 409 and "call-1" in (await r.json())["error"]
    await intruder.close()
    peer = server.peers["call-1"]
    assert peer.transport.pc is not intruder.pc

    await first.close()  # hang up; the id is free again once the call is cleaned up
    assert peer.watcher is not None
    await asyncio.wait_for(peer.watcher, 10)
    assert "call-1" not in server.peers
    again, _ = await dial(server, http, session_id="call-1")
    await again.close()


async def test_full_server_answers_503(
    server: PlaygroundServer, http: aiohttp.ClientSession
) -> None:
    clients = [(await dial(server, http))[0] for _ in range(3)]
    extra = ClientPeer()
    async with http.post(
        server.url + "offer", json={"type": "offer", "sdp": await extra.offer()}
    ) as r:
        assert r.status == 503
    for c in [*clients, extra]:
        await c.close()


async def test_app_that_fails_to_start_is_a_500_and_leaves_nothing(
    http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    transports: list[WebRTCTransport] = []

    async def broken(transport: WebRTCTransport) -> AgentSession:
        transports.append(transport)
        raise RuntimeError("no model today")

    srv = PlaygroundServer(broken, port=0)
    await srv.start()
    client = ClientPeer()
    try:
        body = {"type": "offer", "sdp": await client.offer()}
        async with http.post(srv.url + "offer", json=body) as r:
            assert r.status == 500
            error = (await r.json())["error"]
        # The client gets a generic message; the details are in the server's log only.
        assert "no model today" not in error and "log" in error
        assert "no model today" in caplog.text
        assert srv.peers == {}
        assert transports[0].closed.is_set() and not transports[0].tasks
    finally:
        await client.close()
        await srv.aclose()


async def test_closing_the_server_hangs_up_every_call(
    scripted: ScriptedBackend, http: aiohttp.ClientSession
) -> None:
    class Quiet(Agent):
        pass

    spec = AppSpec("Quiet", "agent", Quiet, module=__import__(__name__))
    srv = PlaygroundServer(app_factory(spec, scripted, vad=EnergyVAD()), port=0)
    await srv.start()
    client, answer = await dial(srv, http)
    session = srv.peers[answer["session_id"]].session
    assert isinstance(session, AgentSession)
    await srv.aclose()
    assert session.closed.is_set() and srv.peers == {}
    assert (await client.next_message("closed"))["reason"]
    await client.close()


async def test_busy_port_is_a_clear_error(server: PlaygroundServer) -> None:
    other = PlaygroundServer(server.factory, port=server.port)
    with pytest.raises(PortInUseError, match=f"port {server.port} .* in use.*--port"):
        await other.start()
