"""The low-latency resampler at whole-number ratios keeps every k-th sample without soxr.

Checked against two independent references: numpy slicing of the whole signal (exact),
and soxr's own "QQ" stream (what the live paths used before; within 1 LSB of rounding).
The VAD's decisions on real speech through `TurnDetector` are unchanged.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
import soxr
import webrtcvad

from duplex.agents.audio import AudioFrame
from duplex.agents.resample import LOW_LATENCY, Resampler
from duplex.agents.vad import TurnDetector
from duplex.plugins.webrtcvad import WebRTCVAD

from .speech import concat, silence, speak, white_noise

SIZES = [7, 480, 1, 961, 333, 960, 2]


def _signal(seconds: float = 1.0, rate: int = 48000) -> npt.NDArray[np.int16]:
    return np.random.default_rng(3).normal(0, 3000, round(seconds * rate)).astype(np.int16)


def _chunks(x: npt.NDArray[np.int16], sizes: list[int]) -> list[npt.NDArray[np.int16]]:
    out, pos, k = [], 0, 0
    while pos < len(x):
        n = sizes[k % len(sizes)]
        out.append(x[pos : pos + n])
        pos, k = pos + n, k + 1
    return out


@pytest.mark.parametrize(("rate_in", "rate_out"), [(48000, 24000), (48000, 16000), (24000, 8000)])
@pytest.mark.parametrize("sizes", [[960], SIZES])
def test_whole_ratio_keeps_every_kth_sample_across_any_chunking(
    rate_in: int, rate_out: int, sizes: list[int]
) -> None:
    x = _signal(rate=rate_in)
    rs = Resampler(rate_in, rate_out, quality=LOW_LATENCY)
    assert not rs.passthrough
    got = [rs.push(AudioFrame(c.reshape(-1, 1), rate_in)) for c in _chunks(x, sizes)]
    out = np.concatenate([g.data[:, 0] for g in got if g is not None])
    assert all(g is None or (g.sample_rate, g.channels) == (rate_out, 1) for g in got)
    # exact against plain slicing of the whole signal: nothing held back, nothing shifted
    np.testing.assert_array_equal(out, x[:: rate_in // rate_out])
    assert rs.flush() is None


@pytest.mark.parametrize("rate_out", [24000, 16000])
def test_whole_ratio_matches_soxr_quick_stream_within_rounding(rate_out: int) -> None:
    x = _signal(2.0)
    rs = Resampler(48000, rate_out, quality=LOW_LATENCY)
    ref = soxr.ResampleStream(48000, rate_out, 1, dtype="int16", quality="QQ")
    ours, theirs = [], []
    for c in _chunks(x, [960]):
        got = rs.push(AudioFrame(c.reshape(-1, 1), 48000))
        assert got is not None
        ours.append(got.data[:, 0])
        theirs.append(ref.resample_chunk(c))
    a, b = np.concatenate(ours), np.concatenate(theirs)
    n = min(len(a), len(b))
    assert n >= len(a) - 2
    assert int(np.abs(a[:n].astype(np.int32) - b[:n]).max()) <= 1


def test_whole_ratio_mixes_stereo_down_and_reset_restarts_the_phase() -> None:
    left = _signal(0.1)
    right = (left // 3).astype(np.int16)
    stereo = AudioFrame(np.stack([left, right], axis=1), 48000, 2)
    rs = Resampler(48000, 16000, input_channels=2, quality=LOW_LATENCY)
    out = rs.push(stereo.slice(0, 1000))
    mono = stereo.to_mono().data[:, 0]
    assert out is not None and out.channels == 1
    np.testing.assert_array_equal(out.data[:, 0], mono[0:1000:3])
    rs.reset()  # the next chunk starts afresh at its own first sample
    out2 = rs.push(stereo.slice(1000, 1600))
    assert out2 is not None
    np.testing.assert_array_equal(out2.data[:, 0], mono[1000:1600:3])


def test_output_does_not_alias_the_callers_buffer() -> None:
    buf = _signal(0.02)
    rs = Resampler(48000, 24000, quality=LOW_LATENCY)
    out = rs.push(AudioFrame(buf.reshape(-1, 1), 48000, 1, _checked=True))
    assert out is not None
    before = out.data.copy()
    buf[:] = 0  # a transport reusing its receive buffer
    np.testing.assert_array_equal(out.data, before)


def _caller(rate: int = 48000) -> AudioFrame:
    speech = concat(
        silence(0.5, rate),
        speak("the quick brown fox jumps over the lazy dog", rate),
        silence(0.7, rate),
        speak("stop, wait a moment please", rate),
        silence(0.8, rate),
    )
    # full-band noise at 48 kHz: what a decimator without a filter folds into the VAD's band
    noise = white_noise(speech.duration, rate, rms=0.01, seed=9)
    mixed = speech.data.astype(np.int32) + noise.data.astype(np.int32)
    return AudioFrame(np.clip(mixed, -32768, 32767).astype(np.int16), rate)


def test_vad_decisions_on_speech_match_soxr_quick_path() -> None:
    audio = _caller()
    frames = [audio.slice(i, i + 960) for i in range(0, len(audio) - 959, 960)]
    det = TurnDetector(WebRTCVAD(), input_rate=48000)
    ours = []
    for f in frames:
        det.push(f)
        ours.append(det.last_probability >= 0.5)
    # independent: soxr's quick stream to 16 kHz, straight into the C detector
    ref_rs = soxr.ResampleStream(48000, 16000, 1, dtype="int16", quality="QQ")
    vad = webrtcvad.Vad(2)
    pending = np.zeros(0, np.int16)
    theirs = []
    for f in frames:
        pending = np.concatenate([pending, ref_rs.resample_chunk(f.data[:, 0])])
        while len(pending) >= 320:
            theirs.append(vad.is_speech(pending[:320].tobytes(), 16000))
            pending = pending[320:]
    n = min(len(ours), len(theirs))
    assert n >= len(frames) - 1
    assert sum(ours) > 50  # speech was heard
    diffs = [i for i in range(n) if ours[i] != theirs[i]]
    assert len(diffs) <= 2, diffs
