"""`SpeechStart.prefix` is exactly the caller's frames from ``prefix_padding_ms`` before the
onset up to now, however the history is trimmed between frames (checked against every frame
the test kept itself), over several turns of real speech with pauses."""

from __future__ import annotations

import numpy as np
import pytest

from duplex.agents.audio import AudioFrame
from duplex.agents.vad import SpeechStart, TurnDetector, TurnOptions
from duplex.plugins.webrtcvad import WebRTCVAD

from .speech import concat, silence, speak, split


@pytest.mark.parametrize("frame_ms", [10, 20, 30])
@pytest.mark.parametrize("padding_ms", [0.0, 300.0, 1000.0])
def test_prefix_is_every_frame_since_onset_minus_padding(frame_ms: int, padding_ms: float) -> None:
    rate = 24000
    audio = concat(
        silence(0.6, rate),
        speak("hello there", rate),
        silence(0.9, rate),
        speak("one more thing", rate),
        silence(0.3, rate),  # a short pause: the same turn
        speak("and then goodbye", rate),
        silence(1.0, rate),
    )
    noisy = audio.data[:, 0].astype(np.int32) + np.random.default_rng(2).integers(
        -40, 40, len(audio)
    )
    audio = AudioFrame(noisy.clip(-32768, 32767).astype(np.int16).reshape(-1, 1), rate)
    det = TurnDetector(
        WebRTCVAD(),
        TurnOptions(prefix_padding_ms=padding_ms, silence_duration_ms=500.0),
        input_rate=rate,
    )
    kept: list[tuple[float, AudioFrame]] = []
    pos = 0.0
    starts = 0
    for f in split(audio, frame_ms):
        pos += f.duration_ms
        kept.append((pos, f))
        for ev in det.push(f):
            if isinstance(ev, SpeechStart):
                starts += 1
                since = ev.at_ms - padding_ms
                expected = [fr for end, fr in kept if end > since]
                assert len(ev.prefix) == len(expected)
                assert all(a is b for a, b in zip(ev.prefix, expected, strict=True))
    assert starts >= 2
