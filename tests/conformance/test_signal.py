"""The measuring tape itself: tagged audio decodes to exactly what was played."""

from __future__ import annotations

import numpy as np

from duplex.agents.audio import AudioFrame
from duplex.agents.resample import Resampler
from duplex.agents.testing import PlayedFrame

from .signal import RATE, caller_tone, heard, noise, tagged, transcribe_tone, utterance_words


def frames(*parts: AudioFrame) -> list[PlayedFrame]:
    out, at = [], 0.0
    for p in parts:
        for i in range(0, p.samples_per_channel, 480):
            f = p.slice(i, i + 480)
            out.append(PlayedFrame(at, f))
            at += f.duration_ms
    return out


def test_heard_counts_each_reply_and_ignores_padding() -> None:
    pad = AudioFrame.silence(0.01, RATE)
    got, foreign = heard(frames(tagged(3, 300), pad, tagged(4, 120)))
    assert foreign == 0
    assert got[3].ms() == 300 and got[3].in_order
    assert got[4].ms() == 120 and got[4].in_order


def test_heard_sees_a_gap_or_a_repeat() -> None:
    gap = frames(tagged(5, 100), tagged(5, 100, start_ms=140))
    assert not heard(gap)[0][5].in_order
    repeat = frames(tagged(6, 100), tagged(6, 100))
    assert not heard(repeat)[0][6].in_order


def test_foreign_audio_is_reported() -> None:
    t = np.arange(2400) / RATE
    hum = AudioFrame.from_float(0.001 * np.sin(2 * np.pi * 50 * t), RATE)
    assert heard(frames(hum))[1] > 0


def test_tone_transcriber_hears_words_only_in_utterances() -> None:
    rs = Resampler(24000, 16000)
    for k in (0, 7, 39, 40, 217, 399):
        audio = rs.push(caller_tone(k, 400, 24000))
        assert audio is not None
        assert transcribe_tone(audio.data[:, 0], 16000) == utterance_words(k)
    assert transcribe_tone(noise(200, 16000, seed=1).data[:, 0], 16000) == ""
    assert transcribe_tone(np.zeros(8000, np.int16), 16000) == ""
    t = np.arange(2560) / 16000  # the short 180 Hz "mm-hm" of `Call.noise`
    hum = (0.3 * 32767 * np.sin(2 * np.pi * 180 * t)).astype(np.int16)
    assert transcribe_tone(hum, 16000) == ""
