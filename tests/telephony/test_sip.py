"""SIP calls answered by the agent directly, with baresip and sipp as the phones on 127.0.0.1."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import pytest

from duplex.agents import AgentTranscribed, MetricsCollected, SessionClosed
from duplex.agents.phone import PhoneLine, sip_tools
from duplex.agents.testing import ScriptedBackend
from tests.hearing import normalize
from tests.speech import concat, espeak_available, silence, speak

from .baresip import Baresip, baresip_available, free_udp_port
from .sip_harness import sip_harness

pytest.importorskip("pjsua2", reason="direct SIP needs the `sip` extra (pjsua2)")
pytestmark = pytest.mark.skipif(
    not (baresip_available() and shutil.which("sipp") and espeak_available()),
    reason="needs baresip, sipp and espeak-ng (scripts/sysdeps.sh)",
)

SIPP = Path(__file__).parent / "sipp"


def scripted() -> ScriptedBackend:
    return ScriptedBackend([])


async def sipp(scenario: str, target: str | None, port: int | None = None) -> tuple[int, str]:
    args = ["sipp", *([target] if target else []), "-sf", str(SIPP / scenario), "-m", "1"]
    args += ["-i", "127.0.0.1", "-p", str(port or free_udp_port())]
    proc = await asyncio.create_subprocess_exec(
        *args,
        "-timeout",
        "20",
        "-timeout_error",
        "-nostdin",
        "-nd",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def call_from_baresip(h, microphone, **options):  # type: ignore[no-untyped-def]
    phone = await Baresip(microphone, **options).start()
    await phone.dial(h.server.uri)
    transport, session = await h.next_call()
    await phone.wait_event("CALL_ESTABLISHED")
    await asyncio.wait_for(transport.media_ready.wait(), 10)
    return phone, transport, session


@pytest.mark.slow
async def test_a_spoken_call_from_baresip(whisper, record_property) -> None:
    """baresip speaks a question from a WAV; the agent's reply is what baresip recorded."""
    from duplex.backends.cascade import offline_backend

    question = speak("Hello, can you hear me?", 8000, speed=150)
    lead_s = 0.5
    mic = concat(silence(lead_s, 8000), question, silence(9.0, 8000))
    async with sip_harness(offline_backend) as h:
        phone, transport, session = await call_from_baresip(h, mic)
        try:
            said = session.next_event(AgentTranscribed, lambda e: e.final)
            metrics = session.next_event(MetricsCollected)
            await asyncio.wait_for(metrics, 60)
            reply = normalize((await asyncio.wait_for(said, 10)).text).split()
            await asyncio.wait_for(transport.wait_for_playout(), 30)
            await asyncio.sleep(0.3)  # the last packets through baresip's jitter buffer
            closed = session.next_event(SessionClosed)
            await phone.command("hangup")  # BYE from the phone
            await phone.wait_event("CALL_CLOSED")
            await asyncio.wait_for(closed, 10)
            assert transport.codec == "PCMU/8000"
            heard_audio = phone.heard()
            assert heard_audio is not None
            heard = whisper(heard_audio.data[:, 0], heard_audio.sample_rate)
            assert heard.startswith("you said"), heard
            common = set(reply) & set(heard.split())
            assert len(common) >= 0.7 * len(set(reply)), (reply, heard)
            # Latency at the phone: end of the question in its microphone -> first reply sound.
            # Both of baresip's dumps start when the call is established.
            first = _first_loud(heard_audio.data[:, 0], heard_audio.sample_rate)
            speech_end_s = lead_s + question.duration_ms / 1000
            latency_ms = 1000 * (first - speech_end_s)
            record_property("sip_speech_end_to_first_audio_ms", round(latency_ms))
            print(f"direct SIP: caller speech end -> first reply audio: {latency_ms:.0f} ms")
            assert latency_ms > 0
        finally:
            await phone.aclose()


async def test_barge_in_truncates_to_what_baresip_heard() -> None:
    """The model keeps what the phone received before the cut, measured in baresip's recording."""
    from duplex.agents import AgentInterrupted
    from duplex.agents.testing import Reply

    replies = [Reply(text="a long answer " * 20, audio_ms=6000), Reply(text="ok", audio_ms=200)]
    mic = concat(
        silence(0.5, 8000),
        speak("Tell me a story.", 8000),
        silence(2.0, 8000),
        speak("Wait, stop please.", 8000),
        silence(4.0, 8000),
    )
    async with sip_harness(lambda: ScriptedBackend(list(replies))) as h:
        phone, _, session = await call_from_baresip(h, mic)
        try:
            backend = session.backend
            assert isinstance(backend, ScriptedBackend)
            interrupted = session.next_event(AgentInterrupted)
            ev = await asyncio.wait_for(interrupted, 20)
            truncate = await backend.session.wait_for_call("truncate")
            cut = truncate.args["audio_end_ms"]
            assert ev.played_ms == pytest.approx(cut, abs=1)
            assert 300 < cut < 5000
            await asyncio.sleep(0.5)
            await phone.command("hangup")
            await phone.wait_event("CALL_CLOSED")
            heard_audio = phone.heard()
            assert heard_audio is not None
            pcm = heard_audio.data[:, 0].astype(np.int32)
            loud = np.flatnonzero(np.abs(pcm) > 500)
            heard_ms = 1000 * (loud[-1] - loud[0] + 1) / heard_audio.sample_rate
            print(f"SIP barge-in: truncated at {cut} ms, baresip heard {heard_ms:.0f} ms")
            # Sent = heard, give or take the jitter buffer and a frame or two.
            assert cut - 60 <= heard_ms <= cut + 150, (heard_ms, cut)
        finally:
            await phone.aclose()


def _first_loud(pcm: np.ndarray, rate: int, level: int = 500) -> float:
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > level)
    assert loud.size, "the phone heard nothing"
    return float(loud[0]) / rate


@pytest.mark.parametrize(
    ("codecs", "params", "expected"),
    [
        (("g711",), ";audio_codecs=PCMA/8000", "PCMA/8000"),
        (("g711",), "", "PCMU/8000"),
        (("g722", "g711"), "", "G722/16000"),
    ],
)
async def test_codec_negotiation(codecs: tuple[str, ...], params: str, expected: str) -> None:
    async with sip_harness(scripted) as h:
        phone, transport, _ = await call_from_baresip(
            h,
            silence(4, 8000 if expected != "G722/16000" else 16000),
            codecs=codecs,
            account_params=params,
        )
        try:
            assert transport.codec == expected
        finally:
            await phone.aclose()


async def test_dtmf_from_baresip_reaches_the_agent() -> None:
    async with sip_harness(scripted) as h:
        phone, transport, _ = await call_from_baresip(h, silence(8, 8000))
        try:
            assert isinstance(transport, PhoneLine)
            read = {t.name: t for t in sip_tools(transport)}["read_keypad"]
            entry = asyncio.ensure_future(read.invoke(read.validate({"max_digits": 8})))
            await phone.command("sndcode", "90#")
            assert await asyncio.wait_for(entry, 10) == "90"
            assert transport.dtmf_methods == ["rfc4733"] * 3
        finally:
            await phone.aclose()


async def test_sip_info_dtmf_and_bye_from_sipp() -> None:
    async with sip_harness(scripted) as h:
        rc, out = await sipp("info_dtmf.xml", f"127.0.0.1:{h.server.port}")
        assert rc == 0, out
        [transport] = h.server.history
        assert transport.dtmf.pending == "7#"
        assert transport.dtmf_methods == ["sip_info", "sip_info"]
        assert transport.codec == "PCMU/8000"
        await asyncio.wait_for(h.server.wait_idle(), 5)
        assert transport.close_reason.startswith("hangup: 200")


async def test_bye_from_baresip_ends_the_session() -> None:
    async with sip_harness(scripted) as h:
        phone, transport, session = await call_from_baresip(h, silence(8, 8000))
        try:
            closed = session.next_event(SessionClosed)
            await phone.command("hangup")
            await asyncio.wait_for(closed, 10)
            await asyncio.wait_for(h.server.wait_idle(), 5)
            assert transport.close_reason.startswith("hangup:")
        finally:
            await phone.aclose()


async def test_calls_one_after_another_reuse_one_media_port_and_free_their_calls() -> None:
    """PJSIP objects are released on its thread once each call is over; ports are reused
    (a freed port could still be called by the bridge's clock, see `sip_media`)."""
    async with sip_harness(scripted) as h:
        endpoint = h.server.endpoint
        for n in range(3):
            phone, transport, session = await call_from_baresip(h, silence(6, 8000))
            try:
                await _until(lambda t=transport: t.frames_received >= 10)  # the caller's audio
                closed = session.next_event(SessionClosed)
                await phone.command("hangup")
                await asyncio.wait_for(closed, 10)
                await asyncio.wait_for(h.server.wait_idle(), 5)
            finally:
                await phone.aclose()
            # A job queued now runs after the one that released the call.
            assert await endpoint.run(lambda: (endpoint.live_calls, endpoint.ports.size)) == (
                0,
                1,
            ), f"after call {n + 1}"


async def _until(done, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    """For counters without an event: check every 20 ms (a frame) until ``done()``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not done():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_the_agent_hangs_up_and_baresip_sees_the_bye() -> None:
    async with sip_harness(scripted) as h:
        phone, transport, session = await call_from_baresip(h, silence(8, 8000))
        try:
            closed = session.next_event(SessionClosed)
            end_call = {t.name: t for t in sip_tools(transport)}["end_call"]
            assert await end_call.invoke(end_call.validate({})) == "call ended"
            event = await phone.wait_event("CALL_CLOSED", 10)
            assert "sip:agent@" in event.get("peeruri", "")
            await asyncio.wait_for(closed, 10)
            assert transport.close_reason == "agent_hung_up"
        finally:
            await phone.aclose()


async def test_a_transfer_sends_refer_with_the_target() -> None:
    async with sip_harness(scripted) as h:
        phone, transport, _ = await call_from_baresip(h, silence(8, 8000))
        try:
            target = f"sip:desk@127.0.0.1:{free_udp_port()}"
            transfer = {t.name: t for t in sip_tools(transport)}["transfer_call"]
            out = await transfer.invoke(transfer.validate({"destination": target}))
            assert out == f"transferred to {target}"
            event = await phone.wait_event("TRANSFER", 10)
            assert event["param"] == target  # baresip got REFER with Refer-To: <target>
        finally:
            await phone.aclose()


async def test_a_malformed_invite_gets_a_sip_error_and_the_server_keeps_serving() -> None:
    async with sip_harness(scripted) as h:
        rc, out = await sipp("bad_sdp_invite.xml", f"127.0.0.1:{h.server.port}")
        assert rc == 0, out  # the scenario expects "400 Bad SDP" to its INVITE
        assert h.server.history == []  # no session for it
        phone, transport, _ = await call_from_baresip(h, silence(4, 8000))
        try:
            assert transport.codec == "PCMU/8000"
        finally:
            await phone.aclose()


@pytest.mark.parametrize(("password", "code"), [("s3cret", 200), ("wrong", 403)])
async def test_registration_with_digest_auth(password: str, code: int) -> None:
    from duplex.plugins.telephony.sip_endpoint import Registration

    pbx = free_udp_port()
    registrar = asyncio.ensure_future(sipp("registrar.xml", None, pbx))
    await asyncio.sleep(0.3)  # sipp binds its port
    reg = Registration("agent7", f"127.0.0.1:{pbx}", password)
    async with sip_harness(scripted, register=reg) as h:
        answer = await asyncio.wait_for(h.server.wait_registration(), 10)
        assert answer[0] == code
        assert h.server.registered.is_set() == (code == 200)
    rc, out = await registrar
    assert rc == 0, out


async def test_more_calls_than_pjsip_can_hold_is_a_configuration_error() -> None:
    """PJSIP caps its call table at build time (4 in pjsua2-python) without a word."""
    from duplex.agents.errors import ConfigurationError
    from duplex.plugins.telephony.sip_server import SipServer

    async def never(transport):  # type: ignore[no-untyped-def]
        raise AssertionError("no call expected")

    probe = SipServer(never, port=free_udp_port())
    await probe.start()
    capacity = probe.endpoint.call_capacity
    await probe.aclose()
    assert capacity >= 1
    server = SipServer(never, port=free_udp_port(), max_calls=capacity + 1)
    with pytest.raises(ConfigurationError, match=f"at most {capacity} calls"):
        await server.start()
