"""The playground server against strangers: malformed offers, other sites, other hosts, floods.

Real HTTP, real aiortc peers, real sessions (scripted backend); every request to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from duplex.agents import EnergyVAD, Message
from duplex.agents.app import load_app
from duplex.agents.errors import ConfigurationError
from duplex.agents.testing import Reply, ScriptedBackend
from duplex.plugins.webrtc import PlaygroundServer
from duplex.plugins.webrtc.guard import RateLimit
from duplex.plugins.webrtc.playground import app_factory
from tests.webrtc.conftest import EXAMPLE_ARG
from tests.webrtc.peer import ClientPeer

GENEROUS = RateLimit(burst=10_000, per_s=10_000)


def scripted() -> ScriptedBackend:
    return ScriptedBackend([Reply(text=f"Reply {i}.", audio_ms=60) for i in range(40)])


@asynccontextmanager
async def serving(**options: Any) -> AsyncIterator[PlaygroundServer]:
    spec = load_app(EXAMPLE_ARG)
    options.setdefault("max_peers", 3)
    server = PlaygroundServer(app_factory(spec, scripted(), vad=EnergyVAD()), port=0, **options)
    await server.start()
    try:
        yield server
    finally:
        await server.aclose()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def post_offer(
    server: PlaygroundServer,
    http: aiohttp.ClientSession,
    sdp: str,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    async with http.post(
        server.url + "offer", json={"type": "offer", "sdp": sdp}, headers=headers or {}
    ) as r:
        return r.status, await r.json()


async def dial(
    server: PlaygroundServer, http: aiohttp.ClientSession, headers: dict[str, str] | None = None
) -> ClientPeer:
    client = ClientPeer()
    status, body = await post_offer(server, http, await client.offer(), headers)
    assert status == 200, body
    await client.answer(body["sdp"])
    return client


async def wait_until_empty(server: PlaygroundServer) -> None:
    """Every call still listed ends by itself (its watcher removes it)."""
    for peer in list(server.peers.values()):
        if peer.watcher is not None:
            await asyncio.wait_for(peer.watcher, 15)
    assert server.peers == {}


# --- malformed offers never leak a slot --------------------------------------------------------
def payload_type_300(sdp: str) -> str:
    """The issue's offer: a dynamic payload type out of range makes aiortc assert."""
    first = re.search(r"(?m)^m=audio \S+ \S+ (\d+)", sdp)
    assert first is not None
    pt = first.group(1)
    sdp = re.sub(rf"(?m)^(m=audio \S+ \S+) {pt}\b", r"\1 300", sdp)
    return re.sub(rf"(?m)^a=(rtpmap|fmtp|rtcp-fb):{pt}\b", r"a=\1:300", sdp)


def mutations(sdp: str) -> list[str]:
    """Deterministic mutants of a real offer: each line dropped, doubled, or its numbers broken."""
    lines = sdp.split("\r\n")
    out = [payload_type_300(sdp)]
    for i, line in enumerate(lines):
        if not line:
            continue
        out.append("\r\n".join(lines[:i] + lines[i + 1 :]))
        out.append("\r\n".join([*lines[: i + 1], line, *lines[i + 1 :]]))
        if re.search(r"\d", line):
            for number in ("99999999999999999999", "-1", "300"):
                out.append("\r\n".join([*lines[:i], re.sub(r"\d+", number, line), *lines[i + 1 :]]))
    return out


async def test_malformed_offers_never_hold_a_slot(http: aiohttp.ClientSession) -> None:
    # Offers that do negotiate expire fast: no media ever flows from them.
    async with serving(
        offer_rate=GENEROUS,
        max_peers=1000,
        max_pending_per_peer=1000,
        transport_options={"connect_timeout_s": 0.5},
    ) as server:
        source = ClientPeer()
        offer = await source.offer()
        await source.close()
        # 16 of the offer used to lock every slot of a 16-call server.
        for _ in range(16):
            status, body = await post_offer(server, http, payload_type_300(offer))
            assert status == 400, body
            assert "Assertion" not in body["error"]  # generic to the client
        assert server.peers == {}
        statuses = [(await post_offer(server, http, m))[0] for m in mutations(offer)]
        assert set(statuses) <= {200, 400}, statuses
        assert statuses.count(400) > 10
        await wait_until_empty(server)
        client = await dial(server, http)
        await client.close()


async def test_an_offer_alone_cannot_hold_a_slot(http: aiohttp.ClientSession) -> None:
    async with serving(transport_options={"connect_timeout_s": 0.5}) as server:
        stranger = ClientPeer()
        status, body = await post_offer(server, http, await stranger.offer())
        assert status == 200  # answered, but the stranger never connects nor sends audio
        peer = server.peers[body["session_id"]]
        await wait_until_empty(server)
        assert peer.transport.close_reason == "connect_timeout"
        await stranger.close()


async def test_too_many_connecting_calls_from_one_address_are_refused(
    http: aiohttp.ClientSession,
) -> None:
    async with serving(max_pending_per_peer=1, max_peers=5) as server:
        first, second = ClientPeer(), ClientPeer()
        assert (await post_offer(server, http, await first.offer()))[0] == 200
        status, body = await post_offer(server, http, await second.offer())
        assert status == 429 and "connecting" in body["error"]
        await first.close()
        await second.close()


# --- Host, Origin and token ----------------------------------------------------------------------
async def test_foreign_host_names_are_refused(http: aiohttp.ClientSession) -> None:
    async with serving() as server:
        for path in ("", "health", "static/playground.js"):
            async with http.get(server.url + path, headers={"Host": "evil.example"}) as r:
                assert r.status == 403
        client = ClientPeer()
        status, _ = await post_offer(
            server, http, await client.offer(), {"Host": f"evil.example:{server.port}"}
        )
        assert status == 403 and server.peers == {}
        for host in (f"localhost:{server.port}", f"127.0.0.1:{server.port}"):
            async with http.get(server.url + "health", headers={"Host": host}) as r:
                assert r.status == 200
        await client.close()
    async with (
        serving(allowed_hosts=("agent.test",)) as server,
        http.get(server.url, headers={"Host": "agent.test"}) as r,
    ):
        assert r.status == 200


async def test_cross_site_offers_are_refused(http: aiohttp.ClientSession) -> None:
    async with serving(allowed_origins=("https://app.example",)) as server:
        client = ClientPeer()
        sdp = await client.offer()
        body = {"type": "offer", "sdp": sdp}
        # What a form or a no-cors fetch from another site sends: text/plain and its Origin.
        async with http.post(
            server.url + "offer",
            data=json.dumps(body),
            headers={"Origin": "http://evil.example", "Content-Type": "text/plain"},
        ) as r:
            assert r.status == 403
        for origin in ("http://evil.example", "null", f"http://localhost:{server.port + 1}"):
            status, _ = await post_offer(server, http, sdp, {"Origin": origin})
            assert status == 403, origin
        # Without an Origin a browser would have sent one: text/plain is not an offer either.
        async with http.post(
            server.url + "offer", data="{}", headers={"Content-Type": "text/plain"}
        ) as r:
            assert r.status == 415
        assert server.peers == {}
        # The page's own origin, and an allowed one, work.
        client = await dial(server, http, {"Origin": f"http://127.0.0.1:{server.port}"})
        other = await dial(server, http, {"Origin": "https://app.example"})
        await client.close()
        await other.close()


async def test_a_token_guards_offers(
    http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(token="s3cret-t0ken") as server:
        client = ClientPeer()
        sdp = await client.offer()
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-t0ken"}):
            status, _ = await post_offer(server, http, sdp, headers)
            assert status == 401, headers
        assert server.peers == {}
        await client.close()
        ok = await dial(server, http, {"Authorization": "Bearer s3cret-t0ken"})
        await ok.close()
        assert "s3cret-t0ken" not in repr(server.policy)
    assert "s3cret-t0ken" not in caplog.text


def test_binding_beyond_loopback_needs_a_token() -> None:
    spec = load_app(EXAMPLE_ARG)
    factory = app_factory(spec, scripted(), vad=EnergyVAD())
    for host in ("0.0.0.0", "::", "192.0.2.10", ""):
        with pytest.raises(ConfigurationError, match="token"):
            PlaygroundServer(factory, host=host, port=0)
    PlaygroundServer(factory, host="0.0.0.0", port=0, token="t")  # constructed, never bound
    PlaygroundServer(factory, host="::1", port=0)


# --- rate limits ------------------------------------------------------------------------------
async def test_offers_are_rate_limited_per_address(http: aiohttp.ClientSession) -> None:
    async with serving(offer_rate=RateLimit(burst=3, per_s=0.001)) as server:
        statuses = []
        for _ in range(5):
            async with http.post(server.url + "offer", json={"type": "offer"}) as r:
                statuses.append(r.status)
        assert statuses == [400, 400, 400, 429, 429]


async def test_typed_text_is_rate_limited_per_call(http: aiohttp.ClientSession) -> None:
    async with serving(transport_options={"text_rate": RateLimit(burst=3, per_s=0.001)}) as server:
        client = await dial(server, http)
        session_id = (await client.next_message("session"))["session_id"]
        session = server.peers[session_id].session
        for i in range(30):
            client.send({"type": "text", "text": f"message {i}"})
        refused = await client.next_message("error")
        assert refused["code"] == "rate_limited"
        # The typed messages that got through were answered; the rest never reached the model.
        await client.next_message("metrics")
        typed = [
            i for i in session.conversation.items if isinstance(i, Message) and i.role == "user"
        ]
        assert 1 <= len(typed) <= 3
        await client.close()


async def test_concurrent_offers_good_and_bad_leave_no_slot_behind(
    http: aiohttp.ClientSession,
) -> None:
    async with serving(
        offer_rate=GENEROUS,
        max_peers=16,
        max_pending_per_peer=1000,
        transport_options={"connect_timeout_s": 0.5},
    ) as server:
        peers = [ClientPeer() for _ in range(20)]
        offers = [await p.offer() for p in peers]
        sdps = [payload_type_300(o) if i % 2 else o for i, o in enumerate(offers)]
        results = await asyncio.gather(*(post_offer(server, http, s) for s in sdps))
        statuses = [status for status, _ in results]
        assert set(statuses) <= {200, 400, 503}, statuses
        # Every malformed one is refused (or finds the server full), concurrency or not.
        assert all(status in (400, 503) for status in statuses[1::2]), statuses
        await wait_until_empty(server)  # the answered ones expire: none of them sent audio
        for p in peers:
            await p.close()
        client = await dial(server, http)
        await client.close()


async def test_test_calls_only_use_loopback_candidates(http: aiohttp.ClientSession) -> None:
    """tests/webrtc/loopback.py: no test packet may target an address beyond 127.0.0.1."""
    async with serving() as server:
        client = ClientPeer()
        offer = await client.offer()
        status, body = await post_offer(server, http, offer)
        assert status == 200
        await client.answer(body["sdp"])
        for sdp in (offer, body["sdp"]):
            hosts = re.findall(r"(?m)^a=candidate:\S+ \d+ \S+ \d+ (\S+) \d+ typ", sdp)
            assert hosts and set(hosts) == {"127.0.0.1"}, hosts
        await client.next_message("session")
        await client.close()


@pytest.mark.parametrize(
    ("bind", "host", "allowed"),
    [
        ("127.0.0.1", "127.0.0.1:8080", True),
        ("127.0.0.1", "localhost:8080", True),
        ("127.0.0.1", "[::1]:8080", True),
        ("127.0.0.1", "app.localhost", True),
        ("127.0.0.1", "evil.example", False),
        ("127.0.0.1", "127.0.0.1.evil.example", False),
        ("127.0.0.1", "192.0.2.7:8080", False),  # an address we do not serve
        ("127.0.0.1", "", False),
        ("0.0.0.0", "192.0.2.7:8080", True),  # any address: rebinding needs a name
        ("0.0.0.0", "[2001:db8::1]:8080", True),
        ("0.0.0.0", "evil.example", False),
        ("192.0.2.7", "192.0.2.7", True),
        ("192.0.2.7", "192.0.2.8", False),
    ],
)
def test_host_allow_list(bind: str, host: str, allowed: bool) -> None:
    from duplex.plugins.webrtc.guard import AccessPolicy

    assert AccessPolicy.build(bind, token="t").host_allowed(host) is allowed


def test_origin_allow_list() -> None:
    from duplex.plugins.webrtc.guard import AccessPolicy

    policy = AccessPolicy.build("127.0.0.1", allowed_origins=["https://App.example/"])
    assert policy.origin_allowed(None, "127.0.0.1:8080", "http")  # not a browser: no Origin
    assert policy.origin_allowed("http://127.0.0.1:8080", "127.0.0.1:8080", "http")
    assert policy.origin_allowed("https://app.example", "127.0.0.1:8080", "http")
    assert not policy.origin_allowed("http://127.0.0.1:8081", "127.0.0.1:8080", "http")
    assert not policy.origin_allowed("https://127.0.0.1:8080", "127.0.0.1:8080", "http")
    assert not policy.origin_allowed("null", "127.0.0.1:8080", "http")
    # Same origin is not enough when the host itself is foreign (a rebinding name).
    assert not policy.origin_allowed("http://evil.example:8080", "evil.example:8080", "http")


def test_token_bucket_refills() -> None:
    from duplex.plugins.webrtc.guard import TokenBucket

    bucket = TokenBucket(RateLimit(burst=2, per_s=1e9))
    assert bucket.take() and bucket.take()  # refilled at once at this rate
    slow = TokenBucket(RateLimit(burst=2, per_s=1e-9))
    assert [slow.take() for _ in range(3)] == [True, True, False]


async def test_a_text_handler_that_crashes_is_reported_not_silent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from duplex.plugins.webrtc import WebRTCTransport

    async def broken(text: str) -> None:
        raise RuntimeError(f"cannot handle {text!r}")

    transport = WebRTCTransport()
    transport.set_text_handler(broken)
    client = ClientPeer()
    try:
        await client.answer(await transport.accept(await client.offer()))
        client.send({"type": "text", "text": "hello"})
        error = await client.next_message("error")
        assert error["code"] == "text_failed" and "hello" not in error["message"]
        client.send({"type": "ping"})
        await client.next_message("pong")  # the call goes on
    finally:
        await client.close()
        await transport.aclose()
    assert "cannot handle 'hello'" in caplog.text
