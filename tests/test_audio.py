"""AudioFrame validation and conversions, FrameChunker, the streaming Resampler, G.711."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from duplex.agents import g711
from duplex.agents.audio import (
    MAX_FRAME_SECONDS,
    AudioFrame,
    FrameChunker,
    float_to_pcm16,
    pcm16_to_float,
)
from duplex.agents.errors import AudioFormatError
from duplex.agents.resample import Resampler

PROPERTY = settings(
    max_examples=60, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

int16_samples = hnp.arrays(np.int16, st.integers(1, 400), elements=st.integers(-32768, 32767))


# --- AudioFrame validation -------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: AudioFrame(np.zeros(0, np.int16), 16000), "empty"),
        (lambda: AudioFrame(np.zeros((0, 2), np.int16), 16000, 2), "empty"),
        (lambda: AudioFrame.from_pcm16(b"", 16000), "empty"),
        (lambda: AudioFrame.from_pcm16(b"\x00\x01\x02", 16000), "3 bytes"),
        (lambda: AudioFrame.from_pcm16(b"\x00\x01\x02\x03\x04\x05", 16000, 2), "6 bytes"),
        (lambda: AudioFrame.from_pcm16("abcd", 16000), "must be bytes"),  # type: ignore[arg-type]
        (lambda: AudioFrame.from_float(np.array([0.1, np.nan], np.float32), 16000), "NaN"),
        (lambda: AudioFrame.from_float(np.array([np.inf, 0.0]), 16000), "NaN or infinite"),
        (lambda: AudioFrame.from_float(np.array([1, 2], np.int16), 16000), "float samples"),
        (lambda: AudioFrame(np.zeros(10, np.float32), 16000), "int16"),
        (lambda: AudioFrame(np.zeros(10, np.int32), 16000), "int16"),
        (lambda: AudioFrame(np.zeros(10, ">i2"), 16000), "int16"),
        (lambda: AudioFrame([0, 1, 2], 16000), "numpy array"),  # type: ignore[arg-type]
        (lambda: AudioFrame(np.zeros((4, 2, 2), np.int16), 16000, 2), "shape"),
        (lambda: AudioFrame(np.zeros((4, 2), np.int16), 16000, 1), "shape"),
        (lambda: AudioFrame(np.zeros(5, np.int16), 16000, 2), "do not divide"),
        (lambda: AudioFrame(np.zeros(10, np.int16), 12345), "unsupported sample rate"),
        (lambda: AudioFrame(np.zeros(10, np.int16), 0), "unsupported sample rate"),
        (lambda: AudioFrame(np.zeros(10, np.int16), 16000, 0), "channels"),
        (lambda: AudioFrame(np.zeros((9, 9), np.int16), 16000, 9), "channels"),
        (
            lambda: AudioFrame(np.zeros(int(MAX_FRAME_SECONDS * 8000) + 1, np.int16), 8000),
            "limit",
        ),
    ],
)
def test_bad_frames_raise_audio_format_error(make: object, message: str) -> None:
    with pytest.raises(AudioFormatError, match=message):
        make()  # type: ignore[operator]


def test_audio_format_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        AudioFrame(np.zeros(10, np.int16), 44000)


def test_one_dimensional_interleaved_data_is_reshaped() -> None:
    frame = AudioFrame(np.array([1, -1, 2, -2, 3, -3], np.int16), 48000, 2)
    assert frame.data.shape == (3, 2)
    assert frame.samples_per_channel == 3 and len(frame) == 3
    assert frame.duration == pytest.approx(3 / 48000)
    assert frame.to_mono().data[:, 0].tolist() == [0, 0, 0]


def test_mono_mix_averages_channels() -> None:
    frame = AudioFrame(
        np.array([[1000, 3000], [-32768, -32768], [32767, 32767]], np.int16), 8000, 2
    )
    mono = frame.to_mono()
    assert mono.channels == 1
    assert mono.data[:, 0].tolist() == [2000, -32768, 32767]


# --- round trips ----------------------------------------------------------------------


@PROPERTY
@given(int16_samples, st.sampled_from([1, 2]))
def test_pcm16_bytes_round_trip_is_exact(samples: np.ndarray, channels: int) -> None:
    samples = samples[: len(samples) - len(samples) % channels] if channels > 1 else samples
    if samples.size == 0:
        return
    frame = AudioFrame(samples, 24000, channels)
    pcm = frame.to_pcm16()
    assert len(pcm) == 2 * samples.size
    assert pcm == samples.astype("<i2").tobytes()  # little-endian, interleaved
    back = AudioFrame.from_pcm16(pcm, 24000, channels)
    np.testing.assert_array_equal(back.data, frame.data)


@PROPERTY
@given(int16_samples)
def test_int16_float_int16_round_trip_is_lossless(samples: np.ndarray) -> None:
    frame = AudioFrame(samples, 16000)
    as_float = frame.to_float()
    assert as_float.dtype == np.float32
    assert float(np.abs(as_float).max()) <= 1.0
    np.testing.assert_array_equal(AudioFrame.from_float(as_float, 16000).data, frame.data)


def test_float_conversion_scale_and_clipping() -> None:
    pcm = float_to_pcm16(np.array([0.0, 0.5, -0.5, 1.0, -1.0, 3.0, -3.0]))
    assert pcm.tolist() == [0, 16384, -16384, 32767, -32768, 32767, -32768]
    assert pcm16_to_float(np.array([-32768, 16384], np.int16)).tolist() == [-1.0, 0.5]


def test_rms_and_silence() -> None:
    assert AudioFrame.silence(0.02, 16000).rms() == 0.0
    assert len(AudioFrame.silence(0.02, 16000)) == 320
    square = AudioFrame(np.array([16384, -16384] * 100, np.int16), 16000)
    assert square.rms() == pytest.approx(0.5)


def test_concat_refuses_mixed_formats() -> None:
    a = AudioFrame.silence(0.01, 16000)
    with pytest.raises(AudioFormatError):
        AudioFrame.concat([a, AudioFrame.silence(0.01, 8000)])
    with pytest.raises(AudioFormatError):
        AudioFrame.concat([])
    assert len(AudioFrame.concat([a, a])) == 320


# --- FrameChunker -----------------------------------------------------------------------


@PROPERTY
@given(
    st.lists(st.integers(1, 700), min_size=1, max_size=30),
    st.sampled_from([(16000, 20.0, 1), (16000, 32.0, 1), (8000, 10.0, 1), (48000, 10.0, 2)]),
)
def test_chunker_cuts_any_split_into_fixed_frames(
    sizes: list[int], fmt: tuple[int, float, int]
) -> None:
    rate, frame_ms, channels = fmt
    total = sum(sizes)
    signal = (np.arange(total * channels) % 65536 - 32768).astype(np.int16).reshape(-1, channels)
    chunker = FrameChunker(rate, channels, frame_ms)
    out: list[AudioFrame] = []
    pos = 0
    for n in sizes:
        out.extend(chunker.push(AudioFrame(signal[pos : pos + n], rate, channels)))
        pos += n
        assert chunker.pending_samples == pos % chunker.frame_samples
    assert all(len(f) == chunker.frame_samples for f in out)
    assert len(out) == total // chunker.frame_samples
    got = np.concatenate([f.data for f in out]) if out else np.zeros((0, channels), np.int16)
    np.testing.assert_array_equal(got, signal[: len(got)])
    rest = chunker.flush(pad=True)
    if total % chunker.frame_samples:
        assert rest is not None and len(rest) == chunker.frame_samples
        tail = total % chunker.frame_samples
        np.testing.assert_array_equal(rest.data[:tail], signal[len(got) :])
        assert not rest.data[tail:].any()
    else:
        assert rest is None
    assert chunker.pending_samples == 0


def test_chunker_buffers_input_even_if_result_is_not_iterated() -> None:
    chunker = FrameChunker(16000, 1, 20.0)
    chunker.push(AudioFrame(np.ones(100, np.int16), 16000))  # result ignored
    assert chunker.pending_samples == 100
    frames = chunker.push(AudioFrame(np.ones(300, np.int16), 16000))
    assert [len(f) for f in frames] == [320]
    assert chunker.pending_samples == 80


def test_chunker_refuses_other_formats() -> None:
    chunker = FrameChunker(16000, 1, 20.0)
    with pytest.raises(AudioFormatError, match="16000 Hz/1 ch"):
        chunker.push(AudioFrame.silence(0.02, 8000))
    with pytest.raises(AudioFormatError, match="too short"):
        FrameChunker(8000, 1, 0.01)


# --- Resampler ---------------------------------------------------------------------------


def _stereo_sine(freq: float, seconds: float, rate: int) -> AudioFrame:
    t = np.arange(round(seconds * rate)) / rate
    left = 0.5 * np.sin(2 * np.pi * freq * t)
    right = 0.3 * np.sin(2 * np.pi * freq * t)
    return AudioFrame.from_float(np.stack([left, right], axis=1).astype(np.float32), rate, 2)


def _run(resampler: Resampler, frame: AudioFrame, sizes: list[int]) -> AudioFrame:
    out: list[AudioFrame] = []
    pos = 0
    k = 0
    while pos < len(frame):
        n = sizes[k % len(sizes)]
        k += 1
        got = resampler.push(frame.slice(pos, pos + n))
        pos += n
        if got is not None:
            out.append(got)
    tail = resampler.flush()
    if tail is not None:
        out.append(tail)
    return AudioFrame.concat(out)


def _peak_hz(frame: AudioFrame) -> float:
    x = frame.to_float()[:, 0] * np.hanning(len(frame))
    spectrum = np.abs(np.fft.rfft(x))
    return float(np.fft.rfftfreq(len(frame), 1.0 / frame.sample_rate)[np.argmax(spectrum)])


@pytest.mark.parametrize("out_rate", [16000, 24000])
def test_resampler_48k_stereo_to_mono_keeps_frequency_and_length(out_rate: int) -> None:
    src = _stereo_sine(1000.0, 1.0, 48000)
    one_shot = _run(Resampler(48000, out_rate, input_channels=2), src, [len(src)])
    assert one_shot.sample_rate == out_rate and one_shot.channels == 1
    assert abs(len(one_shot) - out_rate) <= 4
    assert _peak_hz(one_shot) == pytest.approx(1000.0, abs=2.0)
    # The mono mix is the average of the channels: amplitude (0.5 + 0.3) / 2.
    steady = one_shot.to_float()[out_rate // 10 : -out_rate // 10, 0]
    assert float(np.abs(steady).max()) == pytest.approx(0.4, abs=0.01)


@pytest.mark.parametrize("out_rate", [16000, 24000])
def test_resampler_chunked_output_matches_one_shot(out_rate: int) -> None:
    src = _stereo_sine(440.0, 1.0, 48000)
    one_shot = _run(Resampler(48000, out_rate, input_channels=2), src, [len(src)])
    # Odd, varying chunk sizes, like network jitter buffers deliver.
    chunked = _run(Resampler(48000, out_rate, input_channels=2), src, [7, 480, 1, 961, 333])
    assert len(chunked) == len(one_shot)
    diff = np.abs(chunked.data.astype(np.int32) - one_shot.data.astype(np.int32))
    assert int(diff.max()) <= 2
    # No clicks: the sample-to-sample step never exceeds what a 440 Hz sine can do.
    steps = np.abs(np.diff(chunked.data[:, 0].astype(np.int32)))
    max_step = 0.4 * 32768 * 2 * np.pi * 440 / out_rate
    assert int(steps[100:-100].max()) <= max_step * 1.05 + 2


def test_resampler_keeps_channels_and_upsamples() -> None:
    src = _stereo_sine(300.0, 0.5, 16000)
    out = _run(Resampler(16000, 48000, input_channels=2, output_channels=2), src, [160])
    assert out.channels == 2 and abs(len(out) - 24000) <= 4
    assert _peak_hz(out) == pytest.approx(300.0, abs=2.0)


def test_resampler_same_rate_mixes_down_without_filtering() -> None:
    rs = Resampler(16000, 16000, input_channels=2)
    assert not rs.passthrough
    out = rs.push(AudioFrame(np.array([[100, 300]] * 5, np.int16), 16000, 2))
    assert out is not None and out.data[:, 0].tolist() == [200] * 5
    assert Resampler(16000, 16000).passthrough


def test_resampler_refuses_wrong_input_and_layouts() -> None:
    rs = Resampler(48000, 16000)
    with pytest.raises(AudioFormatError, match="48000 Hz/1 ch"):
        rs.push(AudioFrame.silence(0.01, 16000))
    with pytest.raises(AudioFormatError, match="mono"):
        Resampler(48000, 16000, input_channels=2, output_channels=3)


def test_resampler_reset_forgets_filter_state() -> None:
    src = AudioFrame.from_float(np.full(4800, 0.8, np.float32), 48000)
    fresh = _run(Resampler(48000, 16000), src, [480])
    history = AudioFrame.from_float(np.full(4800, -0.8, np.float32), 48000)

    def first_ms(rs: Resampler) -> np.ndarray:
        return _run(rs, src, [480]).data[:80, 0].astype(np.int32)

    stale = Resampler(48000, 16000)
    stale.push(history)
    cleared = Resampler(48000, 16000)
    cleared.push(history)
    cleared.reset()
    expected = fresh.data[:80, 0].astype(np.int32)
    # Without reset the old signal bleeds into the new one; after reset it does not.
    assert int(np.abs(first_ms(stale) - expected).max()) > 10000
    assert int(np.abs(first_ms(cleared) - expected).max()) <= 2


# --- G.711 -----------------------------------------------------------------------------
# Independent decoders written from the bit layout in ITU-T G.711 (not from audioop):
# the code is bit-inverted (μ-law) or XOR 0x55 (A-law), then sign, 3-bit segment, 4-bit step.


def _ulaw_reference(code: int) -> int:
    u = ~code & 0xFF
    segment, step = (u >> 4) & 0x7, u & 0x0F
    magnitude = (((step << 3) + 0x84) << segment) - 0x84
    return -magnitude if u & 0x80 else magnitude


def _alaw_reference(code: int) -> int:
    a = code ^ 0x55
    segment, step = (a >> 4) & 0x7, a & 0x0F
    # Segment 0 is linear; each higher one doubles the step.
    magnitude = (step << 4) + 8 if segment == 0 else ((step << 4) + 0x108) << (segment - 1)
    return magnitude if a & 0x80 else -magnitude


LAWS = {"ulaw": (_ulaw_reference, 32124), "alaw": (_alaw_reference, 32256)}
ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16)


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_g711_decode_matches_independent_reference(law: g711.G711Law) -> None:
    reference, _ = LAWS[law]
    decoded = g711.decode(bytes(range(256)), law)
    assert decoded.sample_rate == 8000 and decoded.channels == 1
    assert decoded.data[:, 0].tolist() == [reference(c) for c in range(256)]


def test_g711_known_codes() -> None:
    # Silence and full scale, as every G.711 implementation defines them.
    assert g711.encode(AudioFrame(np.zeros(1, np.int16), 8000), "ulaw") == b"\xff"
    assert g711.encode(AudioFrame(np.zeros(1, np.int16), 8000), "alaw") == b"\xd5"
    assert g711.decode(b"\xff\x7f\x80\x00", "ulaw").data[:, 0].tolist() == [0, 0, 32124, -32124]
    assert g711.decode(b"\xd5\x55\xaa\x2a", "alaw").data[:, 0].tolist() == [8, -8, 32256, -32256]


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_g711_encode_round_trip_bounds_over_all_int16(law: g711.G711Law) -> None:
    _, full_scale = LAWS[law]
    codes = g711.encode(AudioFrame(ALL_INT16, 8000), law)
    assert len(codes) == len(ALL_INT16)
    back = g711.decode(codes, law).data[:, 0].astype(np.int64)
    x = ALL_INT16.astype(np.int64)
    # Monotone quantiser: louder input never decodes quieter.
    assert np.all(np.diff(back) >= 0)
    # Each sample lands on one of the two reconstruction levels around it.
    levels = np.unique(back)
    idx = np.clip(np.searchsorted(levels, x), 1, len(levels) - 1)
    inside = np.abs(x) <= full_scale
    chosen = back[inside]
    assert np.all((chosen == levels[idx - 1][inside]) | (chosen == levels[idx][inside]))
    # Companding: error grows with level, about 3 % of the sample plus a small floor.
    err = np.abs(back - x)
    assert np.all(err[inside] <= np.abs(x[inside]) / 32 + 8)
    assert np.all(back[~inside] == np.sign(x[~inside]) * full_scale)


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_g711_sine_snr(law: g711.G711Law) -> None:
    t = np.arange(8000) / 8000
    frame = AudioFrame.from_float((0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 8000)
    back = g711.decode(g711.encode(frame, law), law)
    noise = back.to_float() - frame.to_float()
    snr_db = 10 * np.log10(np.mean(frame.to_float() ** 2) / np.mean(noise**2))
    assert snr_db > 35.0  # G.711's ~38 dB signal-to-quantisation-noise ratio


def test_g711_refuses_bad_input() -> None:
    with pytest.raises(AudioFormatError, match="mono"):
        g711.encode(AudioFrame.silence(0.01, 8000, 2))
    with pytest.raises(AudioFormatError, match="empty"):
        g711.decode(b"")
    with pytest.raises(AudioFormatError, match="law"):
        g711.encode(AudioFrame.silence(0.01, 8000), "mulaw")  # type: ignore[arg-type]
    with pytest.raises(AudioFormatError, match="law"):
        g711.decode(b"\x00", "xlaw")  # type: ignore[arg-type]
