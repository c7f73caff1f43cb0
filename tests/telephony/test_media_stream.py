"""Phone calls over provider media streams, with a provider client speaking each exact format."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from duplex.agents import AgentInterrupted, SessionClosed
from duplex.agents.errors import ToolError
from duplex.agents.phone import DtmfDigit, PhoneLine, sip_tools
from duplex.agents.testing import Reply, ScriptedBackend
from tests.leaks import tasks_touching
from tests.speech import espeak_available, speak

from .conftest import phone_harness
from .provider import TWILIO_TOKEN

PROVIDERS = ["twilio", "telnyx"]
needs_espeak = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")


def scripted(*replies: Reply) -> ScriptedBackend:
    return ScriptedBackend(list(replies))


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_dtmf_reaches_the_agent(provider: str) -> None:
    async with phone_harness(provider, scripted) as h:
        phone, transport, _session = await h.call()
        assert isinstance(transport, PhoneLine)
        pressed: list[DtmfDigit] = []
        transport.on_dtmf(pressed.append)
        read = {t.name: t for t in sip_tools(transport)}["read_keypad"]
        entry = asyncio.ensure_future(read.invoke(read.validate({"max_digits": 8})))
        for key in "42*#":
            await phone.press(key)
        assert await asyncio.wait_for(entry, 5) == "42*"
        assert [d.digit for d in pressed] == ["4", "2", "*", "#"]
        assert [d.code for d in pressed] == [4, 2, 10, 11]
        assert {d.participant_identity for d in pressed} == {phone.call_id}


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_provider_hangup_closes_the_session_and_leaves_nothing_running(
    provider: str,
) -> None:
    async with phone_harness(provider, scripted) as h:
        phone, transport, session = await h.call()
        closed = session.next_event(SessionClosed)
        await phone.silence(100)
        await phone.stop()
        await asyncio.wait_for(closed, 5)
        await asyncio.wait_for(transport.closed.wait(), 5)
        assert transport.close_reason == "stream_stopped"
        assert transport.call is not None and transport.call.call_id == phone.call_id
        assert transport.frames_received >= 5
        await asyncio.wait_for(h.server.wait_idle(), 5)
        assert tasks_touching([transport, session, transport.output]) == []


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_end_call_tool_hangs_up_through_the_api(provider: str) -> None:
    async with phone_harness(provider, scripted) as h:
        phone, transport, session = await h.call()
        closed = session.next_event(SessionClosed)
        end_call = {t.name: t for t in sip_tools(transport)}["end_call"]
        assert await end_call.invoke(end_call.validate({})) == "call ended"
        [request] = h.provider.requests if provider == "twilio" else h.provider.requests[1:]
        assert request.call_id == phone.call_id
        if provider == "twilio":
            assert request.body == {"Status": "completed"}
        else:
            assert request.action == "hangup"
        await asyncio.wait_for(phone.closed.wait(), 5)
        await asyncio.wait_for(closed, 5)
        # Hanging up a call that is already over is not an error (404 / 90018).
        await transport.control.hang_up(phone.call_id)  # type: ignore[union-attr]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_transfer_tool_moves_the_call(provider: str) -> None:
    async with phone_harness(provider, scripted) as h:
        phone, transport, _session = await h.call()
        tools = {t.name: t for t in sip_tools(transport, allow_transfer_to=("+15550001111",))}
        transfer = tools["transfer_call"]
        with pytest.raises(ToolError, match="only allowed"):
            await transfer.invoke({"destination": "+15550002222"})
        out = await transfer.invoke(transfer.validate({"destination": "+15550001111"}))
        assert out == "transferred to +15550001111"
        [request] = [r for r in h.provider.requests if r.action != "answer"]
        assert request.call_id == phone.call_id
        if provider == "twilio":
            assert request.body == {
                "Twiml": "<Response><Dial><Number>+15550001111</Number></Dial></Response>"
            }
        else:
            assert (request.action, request.body) == ("transfer", {"to": "+15550001111"})
        await asyncio.wait_for(phone.closed.wait(), 5)  # the stream ends as the call moves


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_bad_frames_get_typed_errors_and_the_call_survives(provider: str) -> None:
    async with phone_harness(provider, scripted) as h:
        phone, transport, _session = await h.call()
        assert phone.ws is not None
        await phone.ws.send_str("{not json")
        await phone.send_json({"event": "telepathy", "payload": {}})
        await phone.send_json({"event": "media", "media": {"payload": "%%%not base64"}})
        await phone.send_json({"event": "dtmf", "dtmf": {"digit": "X"}})
        await phone.send_json(["a", "list"])
        await phone.ws.send_bytes(b"\x00\x01")
        await phone.press("7")
        assert await transport.dtmf.read(1, timeout_s=5) == "7"  # still in the call
        codes = [e.code for e in transport.errors]
        assert codes == [
            "bad_json",
            "unknown_event",
            "bad_frame",
            "bad_dtmf",
            "bad_frame",
            "bad_frame",
        ]
        assert all(str(e) for e in transport.errors)
        assert not transport.closed.is_set()
        await phone.silence(60)
        await phone.press("8")
        assert await transport.dtmf.read(1, timeout_s=5) == "8"
        assert transport.frames_received == 3  # media after the bad frames still plays in


@pytest.mark.parametrize(("provider", "encoding"), [("twilio", "audio/x-l16"), ("telnyx", "OPUS")])
async def test_an_encoding_we_cannot_play_ends_the_call_cleanly(
    provider: str, encoding: str
) -> None:
    async with phone_harness(provider, scripted) as h:
        phone = await h.provider.call(h.server.url, encoding=encoding)
        await asyncio.wait_for(phone.closed.wait(), 5)
        [transport] = h.server.history
        assert transport.close_reason == "protocol_error:unsupported_encoding"
        assert "not supported" in str(transport.errors[-1])
        assert h.sessions == []
        await asyncio.wait_for(h.server.wait_idle(), 5)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_oversized_frame_ends_the_call_cleanly(provider: str) -> None:
    async with phone_harness(provider, scripted, max_frame_bytes=16 * 1024) as h:
        phone, transport, session = await h.call()
        closed = session.next_event(SessionClosed)
        await phone.send_json({"event": "media", "media": {"payload": "A" * 64 * 1024}})
        await asyncio.wait_for(phone.closed.wait(), 5)
        assert phone.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
        await asyncio.wait_for(closed, 5)
        assert transport.errors[-1].code == "frame_too_large"


async def test_a_bad_twilio_signature_is_refused() -> None:
    async with phone_harness("twilio", scripted) as h:
        with pytest.raises(PermissionError, match="403"):
            await h.provider.call(h.server.url, signature="bm90IHRoZSBzaWduYXR1cmU=")
        assert h.server.history == []


async def test_a_bad_telnyx_signature_is_refused() -> None:
    from .conftest import telnyx_keys, telnyx_signer

    async with phone_harness("telnyx", scripted) as h:
        other_key, _ = telnyx_keys()
        h.provider.telnyx_signer = telnyx_signer(other_key)
        with pytest.raises(PermissionError, match="403"):
            await h.provider.call(h.server.url)
        h.provider.telnyx_signer = None  # unsigned
        with pytest.raises(PermissionError, match="403"):
            await h.provider.call(h.server.url)
        assert h.provider.requests == []  # nothing was answered


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_stream_without_the_webhook_token_gets_no_session(provider: str) -> None:
    from .provider import PhoneStream

    async with phone_harness(provider, scripted) as h:
        forged = PhoneStream(provider, "CAforged", parameters={"duplex_token": "guess"})
        await forged.connect(h.server.url.replace("http", "ws") + "/media")
        await forged.begin()
        await asyncio.wait_for(forged.closed.wait(), 5)
        [transport] = h.server.history
        assert transport.close_reason == "forbidden"
        assert h.sessions == []
        await forged.aclose()


async def test_twilio_webhook_answers_with_connect_stream() -> None:
    from twilio.request_validator import RequestValidator

    async with phone_harness("twilio", scripted) as h:
        url = h.server.url + "/voice"
        form = {"CallSid": "CA123", "AccountSid": "AC1", "From": "+1555", "To": "+1666"}
        sig = RequestValidator(TWILIO_TOKEN).compute_signature(url, form)
        async with (
            aiohttp.ClientSession() as http,
            http.post(url, data=form, headers={"X-Twilio-Signature": sig}) as resp,
        ):
            assert resp.status == 200
            assert resp.content_type == "text/xml"
            text = await resp.text()
        assert "<Connect><Stream url=" in text and "/media" in text
        assert '<Parameter name="call_sid" value="CA123"/>' in text


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_many_calls_in_one_process(provider: str) -> None:
    async with phone_harness(provider, scripted) as h:
        calls = [await h.call() for _ in range(3)]
        assert len({id(s) for _, _, s in calls}) == 3
        for i, (phone, _, _) in enumerate(calls):
            await phone.press(str(i + 1))
        for i, (_, transport, _) in enumerate(calls):
            assert await transport.dtmf.read(1, timeout_s=5) == str(i + 1)
        for phone, _, session in calls:
            closed = session.next_event(SessionClosed)
            await phone.stop()
            await asyncio.wait_for(closed, 5)


@needs_espeak
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_barge_in_truncates_to_what_the_phone_played(provider: str) -> None:
    """The phone plays in real time and echoes marks; truncation follows the echoes."""
    replies = [Reply(text="a long answer " * 20, audio_ms=6000), Reply(text="ok", audio_ms=200)]
    async with phone_harness(provider, lambda: scripted(*replies)) as h:
        phone, _, session = await h.call()
        backend = session.backend
        assert isinstance(backend, ScriptedBackend)
        await phone.speak(speak("Tell me a story.", 16000))
        await phone.silence(700)
        await backend.session.wait_for_call("create_response")
        await phone.wait_played(1000)
        interrupted = session.next_event(AgentInterrupted)
        await phone.speak(speak("Wait, stop please.", 16000))
        ev = await asyncio.wait_for(interrupted, 20)
        truncate = await backend.session.wait_for_call("truncate")
        await phone.wait_clears(1)  # the clear goes out before the truncation, but arrives later
        await phone.silence(500)
        assert phone.clears == 1
        # Positions the phone confirmed (marks echoed because their audio played) before
        # the clear reached it; the cut must be one of them, not an estimate.
        confirmed = sorted(
            phone.played_at_mark[m] / 8.0
            for m in phone.marks_played
            if phone.played_at_mark[m] <= phone.cleared_played_bytes[0]
        )
        cut = truncate.args["audio_end_ms"]
        assert any(abs(cut - c) <= 1 for c in confirmed), (cut, confirmed[-5:])
        assert cut >= 1000  # the phone had played that much before the caller spoke
        assert ev.played_ms == pytest.approx(cut, abs=1)
        # Sent but not yet played when the clear came: not "heard", so not kept.
        sent_before_clear_ms = _sent_before_clear(phone)
        assert sent_before_clear_ms - cut >= 200, (sent_before_clear_ms, cut)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_provider_that_loses_marks_cannot_stall_the_call(provider: str) -> None:
    """Audio counts as played a grace period after its scheduled end when no mark comes."""
    options = {"mark_grace_s": 0.3}
    reply = Reply(text="hello there", audio_ms=600)
    async with phone_harness(provider, lambda: scripted(reply), transport_options=options) as h:
        phone, transport, session = await h.call()
        phone.echo_marks = False
        await session.generate_reply()
        await phone.wait_played(600)
        await asyncio.wait_for(transport.wait_for_playout(), 10)
        assert phone.marks_echoed == [] and len(phone.marks_sent_to_us) >= 30
        assert transport.output.played_ms == pytest.approx(600, abs=1)
        assert transport.output.buffered_ms == 0


def _sent_before_clear(phone: object) -> float:
    total = 0
    for frame in getattr(phone, "frames_in"):  # noqa: B009
        if frame.get("event") == "clear":
            break
        if frame.get("event") == "media":
            import base64

            total += len(base64.b64decode(frame["media"]["payload"]))
    return total / 8.0


def test_outbound_frames_match_each_provider() -> None:
    from duplex.plugins.telephony import TelnyxDialect, TwilioDialect

    tw = TwilioDialect()
    tw.stream_id = "MZ1"
    assert tw.media(b"\xff\x7f") == {
        "event": "media",
        "streamSid": "MZ1",
        "media": {"payload": "/38="},
    }
    assert tw.mark("m1") == {"event": "mark", "streamSid": "MZ1", "mark": {"name": "m1"}}
    assert tw.clear() == {"event": "clear", "streamSid": "MZ1"}
    tx = TelnyxDialect()
    tx.stream_id = "s-1"
    assert json.dumps(tx.media(b"\xff")) == '{"event": "media", "media": {"payload": "/w=="}}'
    assert tx.mark("m2") == {"event": "mark", "mark": {"name": "m2"}}
    assert tx.clear() == {"event": "clear"}


def test_mark_tracker_maps_echoes_to_positions() -> None:
    from duplex.plugins.telephony import MarkTracker

    marks = MarkTracker()
    names = [marks.sent(20.0 * (i + 1)) for i in range(5)]
    assert len(set(names)) == 5 and marks.pending_marks == 5
    assert marks.echoed(names[1]) == 40.0  # settles the first two
    assert marks.pending_marks == 3
    assert marks.clear() == 3
    assert marks.echoed(names[3]) is None  # returned by the clear: not played
    assert marks.ignored_echoes == 1
    later = marks.sent(60.0)
    assert later not in names and marks.echoed(later) == 60.0


async def test_without_api_credentials_twilio_calls_end_by_closing_the_stream() -> None:
    async with phone_harness("twilio", scripted) as h:
        h.server.control = None  # as `agent phone` runs without TWILIO_* credentials
        phone, transport, session = await h.call()
        transport.control = None
        closed = session.next_event(SessionClosed)
        end_call = {t.name: t for t in sip_tools(transport)}["end_call"]
        assert await end_call.invoke(end_call.validate({})) == "call ended"
        await asyncio.wait_for(phone.closed.wait(), 5)
        await asyncio.wait_for(closed, 5)
        assert h.provider.requests == []


def test_registration_targets_parse() -> None:
    pytest.importorskip("pjsua2")
    from duplex.agents.errors import ConfigurationError
    from duplex.plugins.telephony.sip_endpoint import Registration

    reg = Registration.parse("sip:7000@pbx.example.com", "pw")
    assert (reg.user, reg.domain, reg.password) == ("7000", "pbx.example.com", "pw")
    for bad in ("7000", "@pbx", "7000@"):
        with pytest.raises(ConfigurationError, match="user@pbx"):
            Registration.parse(bad)
