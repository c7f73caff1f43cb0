"""Caller speech end -> first reply audio at the phone, per phone path (``-m heavy``).

The backend replies at once (a scripted tone), so what is measured is the path
itself: end-of-turn detection (400 ms of silence here), the session, the
transport and, for SIP, PJSIP's bridge plus baresip's jitter buffer. Numbers
are printed, not asserted (see docs/transports/phone.md for results).
"""

from __future__ import annotations

import asyncio
import statistics

import numpy as np
import pytest

from duplex.agents.testing import Reply, ScriptedBackend
from tests.speech import concat, espeak_available, silence, speak

from .conftest import phone_harness

pytestmark = [
    pytest.mark.heavy,
    pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed"),
]
CALLS = 5


def replying() -> ScriptedBackend:
    return ScriptedBackend([Reply(text="sure", audio_ms=600)])


@pytest.mark.parametrize("provider", ["twilio", "telnyx"])
async def test_media_stream_latency(provider: str) -> None:
    results = []
    question = speak("Hello, can you hear me?", 16000)
    async with phone_harness(provider, replying) as h:
        for _ in range(CALLS):
            phone, _, _ = await h.call()
            await phone.silence(200)
            await phone.speak(question)
            end = asyncio.get_running_loop().time()
            await phone.silence(1500)
            assert phone.first_audio_at is not None
            results.append(1000 * (phone.first_audio_at - end))
            await phone.stop()
    print(
        f"{provider}: speech end -> first reply audio, median {statistics.median(results):.0f} ms "
        f"(min {min(results):.0f}, max {max(results):.0f}, n={len(results)})"
    )


async def test_direct_sip_latency() -> None:
    pytest.importorskip("pjsua2")
    from .baresip import Baresip, baresip_available
    from .sip_harness import sip_harness

    if not baresip_available():
        pytest.skip("needs baresip")
    results = []
    question = speak("Hello, can you hear me?", 8000)
    lead = 0.5
    async with sip_harness(replying) as h:
        for _ in range(CALLS):
            phone = await Baresip(concat(silence(lead, 8000), question, silence(3, 8000))).start()
            try:
                await phone.dial(h.server.uri)
                await phone.wait_event("CALL_CLOSED", 30)  # baresip hangs up at the WAV's end
                heard = phone.heard()
                assert heard is not None
                loud = np.flatnonzero(np.abs(heard.data[:, 0].astype(np.int32)) > 500)
                first_s = float(loud[0]) / heard.sample_rate
                results.append(1000 * (first_s - lead - question.duration_ms / 1000))
            finally:
                await phone.aclose()
            await h.next_call()
    print(
        f"direct SIP: speech end -> first reply audio, median {statistics.median(results):.0f} ms "
        f"(min {min(results):.0f}, max {max(results):.0f}, n={len(results)})"
    )
