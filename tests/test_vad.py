"""The WebRTC and Silero VAD plugins and the TurnDetector over them, on real synthetic speech.

Speech comes from espeak-ng (tests/speech.py), trimmed so that padding it with
known silence gives the exact spoken region to check onsets and offsets against.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest

from duplex.agents.audio import AudioFrame, FrameChunker
from duplex.agents.errors import AudioFormatError, ConfigurationError
from duplex.agents.vad import (
    VAD,
    EndOfTurnModel,
    SpeechEnd,
    SpeechStart,
    TurnDetector,
    TurnEvent,
    TurnOptions,
)
from duplex.plugins.silero import SileroVAD, bundled_model_path
from duplex.plugins.webrtcvad import WebRTCVAD
from tests.speech import concat, espeak_available, pink_noise, silence, speak, split, white_noise

pytestmark = pytest.mark.skipif(not espeak_available(), reason="needs the espeak-ng binary")

PHRASE = "Hello there, I would like to book a table for two people tonight."
FIRST = "Hello, I would like a table."
SECOND = "Around seven, if you can."

VADS: dict[str, Callable[[], VAD]] = {
    "webrtc": lambda: WebRTCVAD(2),
    "silero": lambda: SileroVAD(),
}


@pytest.fixture(params=sorted(VADS))
def vad(request: pytest.FixtureRequest) -> VAD:
    return VADS[request.param]()


def probabilities(vad: VAD, audio: AudioFrame) -> np.ndarray:
    """One score per VAD frame, fed exactly as the TurnDetector would."""
    stream = vad.stream()
    chunker = FrameChunker(vad.sample_rate, 1, vad.frame_ms)
    return np.array([stream.process(c) for c in chunker.push(audio)])


def detect(
    vad: VAD, audio: AudioFrame, options: TurnOptions | None = None, frame_ms: float = 20
) -> tuple[list[TurnEvent], list[tuple[float, AudioFrame]]]:
    """Events, and the input frames with their start times (to check prefixes against)."""
    detector = TurnDetector(vad, options, input_rate=audio.sample_rate)
    events: list[TurnEvent] = []
    fed: list[tuple[float, AudioFrame]] = []
    for frame in split(audio, frame_ms):
        fed.append((detector.audio_ms, frame))
        events.extend(detector.push(frame))
    return events, fed


def turns(events: list[TurnEvent]) -> list[tuple[float, float]]:
    """(onset, offset) pairs; also checks starts and ends alternate."""
    out: list[tuple[float, float]] = []
    for i in range(0, len(events), 2):
        start, end = events[i], events[i + 1]
        assert isinstance(start, SpeechStart) and isinstance(end, SpeechEnd), events
        assert end.speech_ms == pytest.approx(end.at_ms - start.at_ms)
        out.append((start.at_ms, end.at_ms))
    return out


# --- plugin construction ---------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{"mode": 4}, {"mode": -1}, {"mode": True}, {"sample_rate": 44100}, {"frame_ms": 25}],
)
def test_webrtcvad_rejects_bad_configuration(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError) as info:
        WebRTCVAD(**kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(("rate", "frame_ms"), [(8000, 10), (16000, 20), (32000, 30), (48000, 10)])
def test_webrtcvad_frame_sizes(rate: int, frame_ms: int) -> None:
    vad = WebRTCVAD(3, sample_rate=rate, frame_ms=frame_ms)
    assert vad.frame_samples == rate * frame_ms // 1000 and vad.frame_ms == frame_ms
    probs = probabilities(vad, concat(speak(PHRASE, rate), silence(0.5, rate)))
    assert set(np.unique(probs)) <= {0.0, 1.0}
    assert probs.mean() > 0.5


def test_streams_refuse_frames_of_the_wrong_size_or_rate() -> None:
    for vad in (WebRTCVAD(), SileroVAD()):
        stream = vad.stream()
        with pytest.raises(AudioFormatError, match="samples"):
            stream.process(AudioFrame.silence(0.01, 16000))
        with pytest.raises(AudioFormatError, match="16000 Hz"):
            stream.process(AudioFrame.silence(vad.frame_ms / 1000, 8000))


def test_silero_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="8000, 16000"):
        SileroVAD(sample_rate=48000)
    with pytest.raises(ConfigurationError, match="not found"):
        SileroVAD(model_path=tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ConfigurationError, match="cannot load"):
        SileroVAD(model_path=junk)


def test_silero_without_bundled_model_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import duplex.plugins.silero._model as model

    monkeypatch.setattr(model, "bundled_model_path", lambda: None)
    with pytest.raises(ConfigurationError, match="pip install livekit-plugins-silero"):
        SileroVAD()


def test_silero_model_is_found_without_importing_livekit_agents() -> None:
    code = (
        "import sys; from duplex.plugins.silero import SileroVAD; v = SileroVAD(); "
        "print(v.model_path); "
        "print(sorted(m for m in sys.modules "
        "if m.startswith(('livekit.plugins.', 'livekit.agents'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()
    assert out[0].endswith("silero_vad.onnx") and Path(out[0]) == bundled_model_path()
    assert out[1] == "[]"


def test_silero_session_is_shared_and_single_threaded() -> None:
    a, b = SileroVAD(), SileroVAD(model_path=bundled_model_path())
    assert a._session is b._session
    opts = a._session.get_session_options()
    assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1


# --- frame classification ------------------------------------------------------------------


def test_speech_is_detected_only_within_the_spoken_region(vad: VAD) -> None:
    speech = speak(PHRASE, vad.sample_rate)
    probs = probabilities(vad, concat(silence(1.0, vad.sample_rate), speech, silence(1.5)))
    t = (np.arange(len(probs)) + 0.5) * vad.frame_ms / 1000  # frame centres, seconds
    spoken = (t > 1.0) & (t < 1.0 + speech.duration)
    assert (probs[spoken] >= 0.5).mean() > 0.85
    assert not (probs[t < 1.0] >= 0.5).any()
    assert not (probs[t > 1.0 + speech.duration + 0.2] >= 0.5).any()


def test_silence_is_never_speech(vad: VAD) -> None:
    assert probabilities(vad, silence(3.0, vad.sample_rate)).max() < 0.5


@pytest.mark.parametrize("rms", [0.01, 0.05, 0.2])
@pytest.mark.parametrize("noise", [white_noise, pink_noise])
def test_silero_rejects_steady_noise(noise: Callable[..., AudioFrame], rms: float) -> None:
    assert probabilities(SileroVAD(), noise(3.0, 16000, rms=rms, seed=7)).max() < 0.2


def test_webrtcvad_aggressiveness_rejects_white_noise() -> None:
    """Mode 0 calls any loud noise speech; mode 3 rejects most of it yet keeps speech.

    (webrtcvad accepts pink noise in every mode: that is what Silero is for.)
    """
    noise = white_noise(3.0, 16000, rms=0.05, seed=3)
    lenient, strict = probabilities(WebRTCVAD(0), noise), probabilities(WebRTCVAD(3), noise)
    assert lenient.mean() > 0.95
    assert strict.mean() < 0.35
    assert probabilities(WebRTCVAD(3), speak(PHRASE)).mean() > 0.9


def test_silero_at_8khz() -> None:
    vad = SileroVAD(sample_rate=8000)
    assert (vad.frame_samples, vad.context_samples) == (256, 32)
    probs = probabilities(vad, concat(silence(0.5, 8000), speak(PHRASE, 8000), silence(0.5, 8000)))
    assert (probs >= 0.5).mean() > 0.5
    assert probs[:10].max() < 0.5


def test_silero_streams_keep_their_own_state() -> None:
    """Interleaving two streams on the shared session gives each the same scores as alone."""
    vad = SileroVAD()
    chunks_a = FrameChunker(16000, 1, vad.frame_ms).push(concat(speak(PHRASE), silence(0.5)))
    chunks_b = FrameChunker(16000, 1, vad.frame_ms).push(concat(silence(1.0), speak(FIRST)))
    n = min(len(chunks_a), len(chunks_b))
    alone = vad.stream()
    alone_a = [alone.process(c) for c in chunks_a[:n]]
    sa, sb = vad.stream(), vad.stream()
    mixed_a = []
    for ca, cb in zip(chunks_a[:n], chunks_b[:n], strict=True):
        mixed_a.append(sa.process(ca))
        sb.process(cb)
    np.testing.assert_allclose(mixed_a, alone_a, atol=1e-6)


def test_silero_stream_feeds_overlapping_windows_and_threads_state() -> None:
    """Each call sees the previous chunk's last 64 samples before its own 512.

    Reference: the model run directly over overlapping 576-sample windows cut from
    the whole signal (zeros before its start), the state passed from call to call.
    """
    vad = SileroVAD()
    audio = concat(silence(0.3), speak(FIRST), silence(0.3))
    usable = len(audio) - len(audio) % 512
    signal = np.concatenate([np.zeros(64, np.float32), audio.to_float()[:usable, 0]])
    state = np.zeros((2, 1, 128), np.float32)
    expected = []
    for start in range(0, usable, 512):
        window = signal[start : start + 576].reshape(1, -1)
        out, state = vad._session.run(
            None, {"input": window, "state": state, "sr": np.array(16000, np.int64)}
        )
        expected.append(float(out[0, 0]))
    got = probabilities(vad, audio)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert max(got) > 0.9  # the reference really contains speech


def test_silero_reset_restores_a_fresh_stream() -> None:
    vad = SileroVAD()
    chunks = FrameChunker(16000, 1, vad.frame_ms).push(speak(PHRASE))
    stream = vad.stream()
    first = [stream.process(c) for c in chunks[:20]]
    # State carries over: the same audio scores differently mid-stream...
    again = [stream.process(c) for c in chunks[:20]]
    assert not np.allclose(first, again, atol=1e-3)
    # ...and not after reset.
    stream.reset()
    np.testing.assert_allclose([stream.process(c) for c in chunks[:20]], first, atol=1e-6)


# --- TurnDetector ----------------------------------------------------------------------------

ONSET_TOLERANCE_MS = (-25.0, 120.0)  # a VAD needs a frame or three to be sure
OFFSET_TOLERANCE_MS = 160.0


def test_one_utterance_is_one_turn(vad: VAD) -> None:
    speech = speak(PHRASE)
    events, _ = detect(vad, concat(silence(1.0), speech, silence(1.5)))
    [(onset, offset)] = turns(events)
    assert ONSET_TOLERANCE_MS[0] <= onset - 1000.0 <= ONSET_TOLERANCE_MS[1]
    assert abs(offset - (1000.0 + speech.duration_ms)) <= OFFSET_TOLERANCE_MS


def test_long_gap_splits_turns_short_gap_does_not(vad: VAD) -> None:
    first, second = speak(FIRST), speak(SECOND)
    options = TurnOptions(silence_duration_ms=500)
    events, _ = detect(
        vad, concat(silence(0.5), first, silence(1.0), second, silence(1.0)), options
    )
    (on1, off1), (on2, off2) = turns(events)
    start2 = 500.0 + first.duration_ms + 1000.0
    assert ONSET_TOLERANCE_MS[0] <= on1 - 500.0 <= ONSET_TOLERANCE_MS[1]
    assert abs(off1 - (500.0 + first.duration_ms)) <= OFFSET_TOLERANCE_MS
    assert ONSET_TOLERANCE_MS[0] <= on2 - start2 <= ONSET_TOLERANCE_MS[1]
    assert abs(off2 - (start2 + second.duration_ms)) <= OFFSET_TOLERANCE_MS

    events, _ = detect(
        vad, concat(silence(0.5), first, silence(0.2), second, silence(1.0)), options
    )
    [(_, offset)] = turns(events)
    assert abs(offset - (500.0 + first.duration_ms + 200.0 + second.duration_ms)) <= 160.0


def test_turn_ends_only_after_the_silence_duration(vad: VAD) -> None:
    speech = speak(FIRST)
    audio = concat(silence(0.5), speech, silence(2.0))
    for silence_ms in (300.0, 900.0):
        detector = TurnDetector(vad, TurnOptions(silence_duration_ms=silence_ms))
        for frame in split(audio, 20):
            end = [e for e in detector.push(frame) if isinstance(e, SpeechEnd)]
            if end:
                # Reported once the silence has lasted, dated back to the last voiced frame.
                waited = detector.audio_ms - end[0].at_ms
                assert silence_ms <= waited <= silence_ms + 2 * vad.frame_ms + 40
                break
        else:
            pytest.fail("no SpeechEnd")


def test_min_speech_suppresses_a_short_blip(vad: VAD) -> None:
    speech = speak(PHRASE)
    mid = len(speech) // 3
    blip = speech.slice(mid, mid + 1600)  # 100 ms of voiced speech
    audio = concat(silence(0.5), blip, silence(1.0))
    # Without the guard the blip is a turn, so the guard is what removes it.
    assert len(turns(detect(vad, audio, TurnOptions(min_speech_ms=0))[0])) == 1
    assert detect(vad, audio, TurnOptions(min_speech_ms=250))[0] == []
    # A real utterance still passes the same guard.
    assert (
        len(
            turns(
                detect(
                    vad, concat(silence(0.5), speech, silence(1.0)), TurnOptions(min_speech_ms=250)
                )[0]
            )
        )
        == 1
    )


@pytest.mark.parametrize("frame_ms", [10, 20, 100, 250])
@pytest.mark.parametrize("padding_ms", [100.0, 300.0])
def test_prefix_padding_returns_audio_before_onset(
    vad: VAD, frame_ms: int, padding_ms: float
) -> None:
    audio = concat(silence(1.0), speak(PHRASE), silence(0.5))
    events, fed = detect(vad, audio, TurnOptions(prefix_padding_ms=padding_ms), frame_ms)
    start = events[0]
    assert isinstance(start, SpeechStart)
    starts = {id(frame): at for at, frame in fed}
    first_at = starts[id(start.prefix[0])]
    # It begins on the input frame that holds onset - padding, and runs without a gap
    # up to the newest frame pushed, so the backend hears the first syllable in full.
    assert first_at <= start.at_ms - padding_ms < first_at + start.prefix[0].duration_ms
    k = next(i for i, (_, f) in enumerate(fed) if f is start.prefix[0])
    assert [id(f) for f in start.prefix] == [id(f) for _, f in fed[k : k + len(start.prefix)]]
    prefix_audio = AudioFrame.concat(list(start.prefix))
    assert prefix_audio.duration_ms >= padding_ms
    assert prefix_audio.slice(0, round((1000.0 - first_at) * 16)).rms() == 0.0  # silence first
    assert prefix_audio.rms() > 0.01  # and the speech itself


def test_mono_48khz_input(vad: VAD) -> None:
    speech = speak(PHRASE, 48000)
    audio = concat(silence(1.0, 48000), speech, silence(1.5, 48000))
    events, _ = detect(vad, audio)
    [(onset, offset)] = turns(events)
    assert ONSET_TOLERANCE_MS[0] <= onset - 1000.0 <= ONSET_TOLERANCE_MS[1]
    assert abs(offset - (1000.0 + speech.duration_ms)) <= OFFSET_TOLERANCE_MS
    start = events[0]
    assert isinstance(start, SpeechStart)
    assert all(f.sample_rate == 48000 for f in start.prefix)  # the caller's own audio


def test_stereo_input_mixed_down_first(vad: VAD) -> None:
    speech = speak(FIRST, 48000)
    mono = concat(silence(0.5, 48000), speech, silence(1.0, 48000))
    stereo = AudioFrame(np.repeat(mono.data, 2, axis=1), 48000, 2)
    detector = TurnDetector(vad, input_rate=48000)
    with pytest.raises(AudioFormatError):
        detector.push(stereo.slice(0, 960))
    events, _ = detect(vad, stereo.to_mono())
    assert len(turns(events)) == 1


def test_detector_times_follow_audio_not_wall_clock(vad: VAD) -> None:
    """The same audio cut into different frame sizes gives the same decisions."""
    audio = concat(silence(0.5), speak(FIRST), silence(1.0))
    a = turns(detect(vad, audio, frame_ms=10)[0])
    b = turns(detect(vad, audio, frame_ms=170)[0])
    assert a == b


# --- end-of-turn model hook ---------------------------------------------------------------
class _FixedModel(EndOfTurnModel):
    """Answers at once with a set probability, and records the audio it was asked about."""

    def __init__(self, p: float | None) -> None:
        self.p = p
        self.asked: list[tuple[int, int]] = []  # (samples, rate)

    def predict(self, audio: np.ndarray, sample_rate: int) -> Future[float]:
        self.asked.append((len(audio), sample_rate))
        fut: Future[float] = Future()
        if self.p is None:
            fut.set_exception(RuntimeError("model broke"))
        else:
            fut.set_result(self.p)
        return fut


def _eot_options(model: EndOfTurnModel) -> TurnOptions:
    return TurnOptions(end_of_turn=model, end_of_turn_pause_ms=200, end_of_turn_max_ms=1500)


def _decided_at(vad: VAD, audio: AudioFrame, options: TurnOptions) -> tuple[SpeechEnd, float]:
    """The turn's end event and the audio time (ms) of the frame that produced it."""
    detector = TurnDetector(vad, options, input_rate=audio.sample_rate)
    for frame in split(audio, 20):
        for ev in detector.push(frame):
            if isinstance(ev, SpeechEnd):
                return ev, detector.audio_ms
    raise AssertionError("the turn never ended")


def test_complete_verdict_ends_the_turn_after_the_short_pause() -> None:
    model = _FixedModel(0.9)
    audio = concat(silence(0.3), speak(FIRST), silence(2.0))
    end, decided = _decided_at(WebRTCVAD(2), audio, _eot_options(model))
    assert end.end_of_turn == pytest.approx(0.9)
    assert 200 <= decided - end.at_ms < 300  # well before the 500 ms silence rule
    samples, rate = model.asked[0]
    assert rate == 16000 and samples / rate * 1000 >= end.speech_ms  # the whole turn was sent


def test_incomplete_verdict_waits_for_the_longer_limit() -> None:
    audio = concat(silence(0.3), speak(FIRST), silence(2.5))
    end, decided = _decided_at(WebRTCVAD(2), audio, _eot_options(_FixedModel(0.1)))
    assert 1500 <= decided - end.at_ms < 1600
    assert end.end_of_turn == pytest.approx(0.1)


def test_incomplete_pause_then_more_speech_is_one_turn() -> None:
    model = _FixedModel(0.1)
    audio = concat(silence(0.3), speak(FIRST), silence(0.9), speak(SECOND), silence(2.0))
    events, _ = detect(WebRTCVAD(2), audio, _eot_options(model))
    assert [type(e) for e in events] == [SpeechStart, SpeechEnd]
    assert len(model.asked) >= 2  # asked again at the second pause


def test_a_failing_model_falls_back_to_the_silence_rule() -> None:
    audio = concat(silence(0.3), speak(FIRST), silence(1.5))
    end, decided = _decided_at(WebRTCVAD(2), audio, _eot_options(_FixedModel(None)))
    assert 500 <= decided - end.at_ms < 600 and end.end_of_turn is None


def test_without_a_model_the_silence_rule_is_unchanged() -> None:
    audio = concat(silence(0.3), speak(FIRST), silence(1.5))
    end, decided = _decided_at(WebRTCVAD(2), audio, TurnOptions())
    assert 500 <= decided - end.at_ms < 600 and end.end_of_turn is None
