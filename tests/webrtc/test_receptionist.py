"""examples/receptionist.py in the playground, driven by typed turns (the echo stand-in
cannot pick tools): a handoff shown in the page, an MCP calendar, spoken results."""

from __future__ import annotations

from pathlib import Path

import pytest

from duplex.agents.app import load_app
from tests.webrtc.cdp import Browser, chromium_available
from tests.webrtc.conftest import offline, playground, silence_wav
from tests.webrtc.test_playground_ui import connect, n_events, wait_js

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "receptionist.py"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not chromium_available(), reason="needs chromium (apt-get install chromium)"
    ),
]


async def test_receptionist_handoff_and_calendar_by_typed_turns(tmp_path: Path) -> None:
    mic = silence_wav(tmp_path / "mic.wav", 1.0)
    async with playground(offline(), load_app(str(EXAMPLE))) as server:
        browser = await Browser.launch(fake_audio=mic)
        try:
            page = await browser.new_page(server.url + "?echo=0")
            await connect(page)
            assert (await page.evaluate("duplexTest.states()"))["activeAgent"] is None

            since = await n_events(page)
            await page.evaluate("duplexTest.sendText('/transfer_to_booking')")
            handoff = await wait_js(page, "m.type === 'agent_handoff'", since)
            assert (handoff["from"], handoff["to"]) == ("Receptionist", "Booking")
            await wait_js(page, "m.type === 'agent_state' && m.state === 'listening'", since)
            assert (await page.evaluate("duplexTest.states()"))["activeAgent"] == "now: Booking"

            since = await n_events(page)
            await page.evaluate("duplexTest.sendText('/check_availability day=Tuesday')")
            result = await wait_js(
                page, "m.type === 'tool_result' && m.name === 'check_availability'", since
            )
            assert result["output"] == "Free on Tuesday: 19:00, 19:30, 21:00."
            assert not result["is_error"]
            await wait_js(page, "m.type === 'metrics' && m.played_ms > 0", since)
            await wait_js(page, "m.type === 'agent_state' && m.state === 'listening'", since)
            said = (await page.evaluate("duplexTest.transcript()"))[-1]
            assert said["role"] == "assistant" and said["text"] == result["output"]
            tools = await page.evaluate("duplexTest.tools()")
            assert any("check_availability" in t and "19:30" in t for t in tools), tools
            marks = await page.evaluate(
                "[...document.querySelectorAll('#transcript li.handoff')].map(l => l.textContent)"
            )
            assert marks == ["Receptionist → Booking"]
            errors = [c for c in page.console if "error" in c.lower()]
            assert errors == [], errors
        finally:
            await browser.close()
