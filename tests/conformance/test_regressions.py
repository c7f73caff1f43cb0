"""Regressions for issue 10's whole-call bullets, on every backend."""

from __future__ import annotations

import pytest

from .rig import local_items
from .script import BACKENDS, NEEDS_I10, open_call
from .signal import heard

KNOWN_BUG = pytest.mark.xfail(NEEDS_I10, reason="needs i10", strict=True)


@KNOWN_BUG
@pytest.mark.parametrize("backend", BACKENDS)
async def test_two_replies_then_barge_in_cuts_only_the_second(backend: str) -> None:
    async with open_call(backend, seed=3) as call:
        await call.turn()  # reply A, heard in full
        a = max(call.specs)
        await call.settle_and_check()
        await call.barge_in("mid")  # reply B, cut halfway
        b = next(t for t in call.cut)
        item_a, item_b = call.item_of(a), call.item_of(b)
        assert item_a is not None and item_b is not None
        truncated = dict(call.rig.truncations())
        assert item_a not in truncated, "reply A was heard in full and must not be truncated"
        played = heard(call.out.played)[0]
        if call.rig.server_holds_audio:
            assert truncated.get(item_b) == round(played[b].ms())
        local = {i.id: i for i in local_items(call.session.conversation.items)}
        assert local[item_a].text == call.specs[a].text
        view = call.rig.conversation()
        if view is not None:
            server = {i.id: i for i in view}
            assert server[item_a].text == call.specs[a].text
        await call.settle_and_check()


@KNOWN_BUG
@pytest.mark.parametrize("backend", BACKENDS)
async def test_agent_interrupted_names_the_cut_item(backend: str) -> None:
    async with open_call(backend, seed=4) as call:
        await call.turn()
        await call.turn()
        ev = await call.barge_in("mid")
        (cut,) = call.cut
        assert ev.item_id == call.item_of(cut)
        assert ev.played_ms == pytest.approx(heard(call.out.played)[0][cut].ms(), abs=1.0)
