"""The playground in real headless Chromium, talking to the real offline stack.

Chromium's fake microphone plays an espeak-ng WAV; the agent is the example app
on the offline cascade (Whisper hears, Piper speaks); the page records the audio
it received and Whisper, run here, checks what the agent actually said.
"""

from __future__ import annotations

import asyncio
import base64
import math
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from duplex.agents.conversation import FunctionCall, FunctionCallOutput, Message
from duplex.agents.events import SessionClosed
from tests.leaks import tasks_touching
from tests.webrtc.cdp import Browser, CDPError, Page, chromium_available
from tests.webrtc.conftest import (
    ROOT,
    ToolThenEchoLLM,
    call_objects,
    normalize,
    offline,
    playground,
    rms,
    silence_wav,
    speech_wav,
    wav_b64,
)
from tests.webrtc.screenshots import save_screenshot

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not chromium_available(), reason="needs chromium (apt-get install chromium)"
    ),
]

SCREENSHOT = ROOT / "docs" / "img" / "playground.png"


async def wait_msg(page: Page, predicate: str, *, since: int = 0, timeout_s: float = 30.0) -> Any:
    """The first data-channel message (from ``since`` on) that the JS ``predicate`` accepts."""
    try:
        return await page.evaluate(
            f"duplexTest.waitFor(m => {predicate}, {int(timeout_s * 1000)}, {since})",
            timeout=timeout_s + 5,
        )
    except (CDPError, TimeoutError) as e:
        seen = await page.evaluate("JSON.stringify(duplexTest.events.slice(-25))")
        raise AssertionError(f"no message with {predicate}; last messages: {seen}") from e


async def n_events(page: Page) -> int:
    return int(await page.evaluate("duplexTest.events.length"))


async def connect(page: Page) -> str:
    await page.evaluate("duplexTest.connect()")
    return str(await page.evaluate("duplexTest.sessionId()"))


async def recorded(page: Page) -> bytes:
    return base64.b64decode(await page.evaluate("duplexTest.stopRecording()"))


async def test_spoken_turn_with_a_tool_call_then_typed_text(tmp_path: Path, whisper: Any) -> None:
    mic = speech_wav(tmp_path / "mic.wav", "What time is it?")
    async with playground(offline(ToolThenEchoLLM())) as server:
        browser = await Browser.launch(fake_audio=mic)
        try:
            page = await browser.new_page(server.url + "?echo=0")
            session_id = await connect(page)
            await page.evaluate("duplexTest.startRecording()")

            # Turn 1, spoken into the fake microphone: the model calls the example's tool.
            await wait_msg(page, "m.type === 'tool_call' && m.name === 'current_time'")
            result = await wait_msg(page, "m.type === 'tool_result'")
            first = await wait_msg(
                page, "m.type === 'transcript' && m.role === 'assistant' && m.final"
            )
            assert first["text"] == f"The time is {result['output']}."
            await wait_msg(page, "m.type === 'metrics' && m.played_ms > 0")

            # Turn 2, typed: it travels over the data channel.
            since = await n_events(page)
            await page.evaluate("duplexTest.sendText('thank you very much')")
            second = await wait_msg(
                page, "m.type === 'transcript' && m.role === 'assistant' && m.final", since=since
            )
            assert second["text"] == "You said: thank you very much."
            await wait_msg(page, "m.type === 'metrics' && m.played_ms > 0", since=since)
            heard = whisper(await recorded(page))

            # What the caller heard, judged by Whisper from the browser's own recording.
            assert "the time is" in heard, heard
            assert "you said thank you" in heard, heard

            session = server.peers[session_id].session
            items = session.conversation.items
            user_spoken = items[0]
            assert isinstance(user_spoken, Message) and user_spoken.role == "user"
            assert "time" in normalize(user_spoken.text)
            calls = [i for i in items if isinstance(i, FunctionCall)]
            outputs = [i for i in items if isinstance(i, FunctionCallOutput)]
            assert [c.name for c in calls] == ["current_time"]
            assert [o.output for o in outputs] == [result["output"]]
            assert re.fullmatch(r"\d\d:\d\d", result["output"])
            said = [i.text for i in items if isinstance(i, Message) and i.role == "assistant"]
            assert said == [first["text"], "You said: thank you very much."]

            # The page shows both sides, the tool call and a latency row per spoken reply.
            panel = await page.evaluate("duplexTest.transcript()")
            assert [(p["role"], p["final"]) for p in panel] == [
                ("user", True),
                ("assistant", True),
                ("user", True),
                ("assistant", True),
            ]
            assert "time" in normalize(panel[0]["text"])
            assert [p["text"] for p in panel[1:]] == [
                first["text"],
                "thank you very much",
                second["text"],
            ]
            tools = await page.evaluate("duplexTest.tools()")
            assert len(tools) == 1 and "current_time({})" in tools[0]
            assert result["output"] in tools[0]
            rows = await page.evaluate("document.querySelectorAll('#latency tbody tr').length")
            assert rows >= 2

            save_screenshot(await page.screenshot(), SCREENSHOT.name, tmp_path)
        finally:
            await browser.close()


async def test_barge_in_stops_the_audio_and_truncates(tmp_path: Path, whisper: Any) -> None:
    long_turn = "Please tell me a long story about a little red fox who lived in a deep forest."
    mic = speech_wav(tmp_path / "mic.wav", long_turn)
    async with playground(offline()) as server:
        browser = await Browser.launch(fake_audio=mic)
        try:
            page = await browser.new_page(server.url + "?echo=0")
            session_id = await connect(page)
            await page.evaluate("duplexTest.startRecording()")
            session = server.peers[session_id].session
            user = await wait_msg(page, "m.type === 'transcript' && m.role === 'user' && m.final")
            assert "forest" in normalize(user["text"]), user  # so the full echo would say it
            await wait_msg(page, "m.type === 'agent_state' && m.state === 'speaking'")

            # The caller talks over the reply.
            stop = wav_b64("Wait, stop please.")
            speaking = asyncio.ensure_future(page.evaluate(f"duplexTest.speak('{stop}')"))
            cut = await wait_msg(page, "m.type === 'interrupted'")
            await speaking
            reply = await wait_msg(
                page,
                "m.type === 'transcript' && m.role === 'assistant' && m.final "
                "&& m.text.toLowerCase().includes('stop')",
            )
            metrics = await wait_msg(
                page, "m.type === 'metrics' && m.played_ms > 0 && !m.interrupted"
            )
            heard = whisper(await recorded(page))

            # The first reply was cut where the caller spoke; its tail never played.
            assert cut["played_ms"] > 0
            assert "you said" in heard and "stop" in heard, heard
            assert "forest" not in heard, heard
            first = session.conversation.get(cut["item_id"])
            assert isinstance(first, Message) and first.role == "assistant"
            assert first.truncated_ms is not None
            assert 0 < first.truncated_ms <= cut["played_ms"] + 1
            assert "forest" not in normalize(first.text)
            assert "stop" in reply["text"].lower()
            panel = await page.evaluate("duplexTest.transcript()")
            assert [p["interrupted"] for p in panel if p["role"] == "assistant"] == [True, False]
            # The spoken turn's latency reached the page and its table.
            assert 0 < metrics["end_to_end_ms"] < 10_000
            cells = await page.evaluate(
                "[...document.querySelectorAll('#latency tbody td')].map(td => td.textContent)"
            )
            assert f"{math.floor(metrics['end_to_end_ms'] + 0.5)} ms" in cells  # JS Math.round
        finally:
            await browser.close()


async def test_vanished_peer_closes_its_session_and_spares_the_others(tmp_path: Path) -> None:
    quiet = silence_wav(tmp_path / "quiet.wav", 30.0)
    talker = speech_wav(tmp_path / "talk.wav", "Tell me something nice about the sea.")
    async with playground(offline(), media_timeout_s=1.0) as server:
        browser_b = await Browser.launch(fake_audio=quiet)
        browser_a = await Browser.launch(fake_audio=talker)
        try:
            page_b = await browser_b.new_page(server.url + "?echo=0")
            sid_b = await connect(page_b)
            page_a = await browser_a.new_page(server.url + "?echo=0")
            sid_a = await connect(page_a)
            peer_a = server.peers[sid_a]
            closed = asyncio.ensure_future(peer_a.session.wait_for(SessionClosed, timeout=20))
            await wait_msg(page_a, "m.type === 'agent_state' && m.state === 'speaking'")
            objects = call_objects(peer_a.transport, peer_a.session)
            assert tasks_touching(objects)  # the probe sees the live call's tasks

            # A's tab dies mid-reply: no hang-up, no DTLS close, its packets just stop.
            await page_a.crash()
            await asyncio.wait_for(peer_a.transport.closed.wait(), 10)
            await closed
            assert peer_a.watcher is not None
            await asyncio.wait_for(peer_a.watcher, 10)
            assert peer_a.transport.close_reason == "media_timeout"
            assert sid_a not in server.peers and sid_b in server.peers
            assert not peer_a.transport.tasks
            assert tasks_touching(objects) == []

            # Bad input meanwhile: refused with a clear status, nothing else disturbed.
            async with aiohttp.ClientSession() as http:
                json_type = {"Content-Type": "application/json"}
                async with http.post(
                    server.url + "offer", data="{not json", headers=json_type
                ) as r:
                    assert r.status == 400
                bad = {"type": "offer", "sdp": "v=0\r\nnonsense"}
                async with http.post(server.url + "offer", json=bad) as r:
                    assert r.status == 400
                    assert "offer" in (await r.json())["error"]
                dup = {"type": "offer", "sdp": "v=0\r\n", "session_id": sid_b}
                async with http.post(server.url + "offer", json=dup) as r:
                    assert r.status == 409
                async with http.get(server.url + "health") as r:
                    assert (await r.json())["peers"] == 1

            # B still talks: a typed turn gets a spoken reply.
            since = await n_events(page_b)
            await page_b.evaluate("duplexTest.startRecording()")
            await page_b.evaluate("duplexTest.sendText('are you still there')")
            reply = await wait_msg(
                page_b,
                "m.type === 'transcript' && m.role === 'assistant' && m.final",
                since=since,
            )
            assert reply["text"] == "You said: are you still there."
            await wait_msg(page_b, "m.type === 'metrics' && m.played_ms > 0", since=since)
            assert rms(await recorded(page_b)) > 0.01
        finally:
            await browser_a.close()
            await browser_b.close()


async def test_the_page_sends_its_token_and_strangers_get_none(tmp_path: Path) -> None:
    from duplex.agents import EnergyVAD
    from duplex.agents.app import load_app
    from duplex.agents.testing import Reply, ScriptedBackend
    from duplex.plugins.webrtc.playground import app_factory
    from duplex.plugins.webrtc.server import PlaygroundServer
    from tests.webrtc.conftest import EXAMPLE_ARG

    backend = ScriptedBackend([Reply(text="Hello.", audio_ms=100)])
    factory = app_factory(load_app(EXAMPLE_ARG), backend, vad=EnergyVAD())
    server = PlaygroundServer(factory, port=0, token="page-t0ken")
    await server.start()
    browser = await Browser.launch(fake_audio=silence_wav(tmp_path / "quiet.wav", 10.0))
    try:
        stranger = await browser.new_page(server.url + "?echo=0")
        with pytest.raises(CDPError, match="token"):
            await connect(stranger)
        assert server.peers == {}
        page = await browser.new_page(server.url + "?echo=0&token=page-t0ken")
        sid = await connect(page)
        assert sid in server.peers
    finally:
        await browser.close()
        await server.aclose()
