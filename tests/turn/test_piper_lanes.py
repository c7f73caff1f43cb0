"""Piper's lanes: a reply's short first clause never waits behind long texts."""

from __future__ import annotations

import threading

import numpy as np

from duplex.plugins.piper import PiperTTS
from duplex.plugins.piper.lanes import SynthesisLanes


def test_short_texts_do_not_wait_behind_long_ones() -> None:
    lanes = SynthesisLanes(bulk_workers=2, express_workers=1)
    release = threading.Event()
    long_text = "A long sentence that the bulk lane takes a while to say, " * 3
    held = [lanes.submit(long_text, lambda: release.wait(30) and None) for _ in range(3)]
    short = lanes.submit("Sure,", lambda: None)
    try:
        short.result(timeout=30)  # ran although every bulk worker is still busy
        assert not any(f.done() for f in held)
    finally:
        release.set()
    for f in held:
        f.result(timeout=30)


async def test_piper_speaks_through_the_lanes(piper: PiperTTS) -> None:
    first = [f async for f in piper.synthesize("You said:")]
    rest = [f async for f in piper.synthesize("Please turn on the kitchen lights right now.")]
    audio = [np.concatenate([f.data[:, 0] for f in frames]) for frames in (first, rest)]
    assert all(len(a) > piper.sample_rate // 4 for a in audio)
    assert all(np.abs(a.astype(np.int32)).max() > 1000 for a in audio)  # speech, not silence
