"""Resume after a false interruption, over whole calls: a sound without words pauses the
reply, which then plays on where it paused; nothing is truncated, the next real barge-in
still cuts."""

from __future__ import annotations

import pytest

from .script import BACKENDS, HAS_RESUMED, open_call, run_step, script
from .signal import heard

NEEDS_RESUME = pytest.mark.xfail(
    not HAS_RESUMED, reason="needs i10: resume_false_interruption", strict=True
)
#: Found by this suite on the i10 core and fixed there: with server VAD (OpenAI) and resume
#: on, (a) the server answered the noise turn, (b) a real barge-in decided by words dropped
#: the first frames of the server's answer, (c) the turn could be answered twice. The
#: session now turns the server's interrupt_response and create_response off and decides.


@NEEDS_RESUME
@pytest.mark.parametrize("kind", ["noise", "mmhm"])
@pytest.mark.parametrize("backend", BACKENDS)
async def test_false_interruption_resumes_and_truncates_nothing(backend: str, kind: str) -> None:
    async with open_call(backend, seed=5, resume_false_interruption=True) as call:
        await call.turn()
        ev = await call.false_interruption(kind, "mid")
        tag = call.last_false_tag
        assert ev.resumed is True
        assert ev.item_id == call.item_of(tag)
        assert heard(call.out.played)[0][tag].ms() == call.specs[tag].audio_ms
        assert call.rig.truncations() == []
        await call.settle_and_check()
        # A real barge-in afterwards is still a cut, to what was heard.
        cut = await call.barge_in("mid")
        assert cut.resumed is False
        await call.settle_and_check()


@NEEDS_RESUME
@pytest.mark.parametrize("backend", BACKENDS)
async def test_long_call_with_resume(backend: str) -> None:
    async with open_call(backend, seed=11, resume_false_interruption=True) as call:
        for step in script(11, 40, can_drop=call.rig.can_drop):
            await run_step(call, step)
            await call.settle_and_check()
        assert any(e.resumed for e in call.interruptions)


@NEEDS_RESUME
@pytest.mark.parametrize("where", ["early", "mid", "late"])
@pytest.mark.parametrize("backend", BACKENDS)
async def test_real_barge_in_with_resume_on_cuts_to_what_was_heard(
    backend: str, where: str
) -> None:
    """Words over the paused reply make it a real interruption: cut, and the new turn's
    reply plays whole, once."""
    async with open_call(backend, seed=6, resume_false_interruption=True) as call:
        await call.turn()
        ev = await call.barge_in(where)
        assert ev.resumed is False
        await call.settle_and_check()
        await call.turn()
        await call.settle_and_check()
