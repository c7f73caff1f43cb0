"""`InputPath` on its own: push-style delivery, handlers that await, the bounded backlog,
and the VAD fed at the caller's native rate."""

from __future__ import annotations

import asyncio

import numpy as np
import numpy.typing as npt
import pytest

from duplex.agents.audio import AudioFrame
from duplex.agents.input_path import InputPath
from duplex.agents.resample import LOW_LATENCY, Resampler
from duplex.agents.testing.memory import MemoryAudioInput
from duplex.agents.transport import QueuedAudioInput
from duplex.agents.vad import SpeechEnd, SpeechStart, TurnDetector
from duplex.plugins.webrtcvad import WebRTCVAD

from .speech import concat, silence, speak, split


def caller(rate: int = 48000) -> AudioFrame:
    audio = concat(silence(0.4, rate), speak("open the pod bay doors", rate), silence(0.8, rate))
    rng = np.random.default_rng(5)
    noisy = audio.data[:, 0].astype(np.int32) + rng.integers(-30, 30, len(audio))
    return AudioFrame(np.clip(noisy, -32768, 32767).astype(np.int16).reshape(-1, 1), rate)


def resampled(frames: list[AudioFrame], rate: int = 24000) -> npt.NDArray[np.int16]:
    """The caller's audio at ``rate``, computed independently of the path: the low-latency
    resampler at a whole ratio is every k-th sample (tests/test_resample_decimate.py)."""
    step, rem = divmod(frames[0].sample_rate, rate)
    assert rem == 0
    return np.concatenate([f.data[:, 0] for f in frames])[::step]


class Recorder:
    """The backend side: what was pushed, and the turn events in order with the audio."""

    def __init__(self, *, nowait: bool, gate: asyncio.Event | None = None) -> None:
        self.audio: list[npt.NDArray[np.int16]] = []
        self.log: list[tuple[str, int]] = []
        self.nowait = nowait
        self.gate = gate
        self.handler_entered = asyncio.Event()

    def samples(self) -> int:
        return sum(len(a) for a in self.audio)

    async def push(self, frame: AudioFrame) -> None:
        self.audio.append(frame.data[:, 0].copy())

    def push_nowait(self, frame: AudioFrame) -> bool:
        if not self.nowait:
            return False
        self.audio.append(frame.data[:, 0].copy())
        return True

    async def start(self, ev: SpeechStart, at: float) -> None:
        self.log.append(("start", self.samples()))
        self.handler_entered.set()
        if self.gate is not None:
            await self.gate.wait()

    async def end(self, ev: SpeechEnd, at: float) -> None:
        self.log.append(("end", self.samples()))

    def path(self, detector: TurnDetector | None, **kw: object) -> InputPath:
        return InputPath(
            24000,
            self.push,
            detector=detector,
            stream_all=True,
            on_speech_start=self.start,
            on_speech_end=self.end,
            on_frame=lambda: None,
            push_nowait=self.push_nowait,
            **kw,  # type: ignore[arg-type]
        )


def detector() -> TurnDetector:
    return TurnDetector(WebRTCVAD(), input_rate=24000)


@pytest.mark.parametrize("nowait", [True, False], ids=["push-nowait", "await-only-backend"])
async def test_frames_in_equal_audio_out_with_turn_events_in_place(nowait: bool) -> None:
    rec = Recorder(nowait=nowait)
    path = rec.path(detector())
    source = MemoryAudioInput(48000, 1)
    frames = split(caller(), 20)
    served = asyncio.get_running_loop().create_task(path.serve(source))
    await asyncio.sleep(0)
    for frame in frames:
        source.push(frame)  # straight into the path, from the "device callback"
    source.end()
    await asyncio.wait_for(served, 5)
    assert np.array_equal(np.concatenate(rec.audio), resampled(frames))
    assert [k for k, _ in rec.log] == ["start", "end"]
    start_at, end_at = rec.log[0][1], rec.log[1][1]
    assert 0 < start_at < end_at < len(resampled(frames))  # handled where the audio was


async def test_a_blocked_handler_holds_later_frames_in_order() -> None:
    gate = asyncio.Event()
    rec = Recorder(nowait=True, gate=gate)
    path = rec.path(detector())
    frames = split(caller(), 20)
    for frame in frames:
        path.feed(frame)
    await asyncio.wait_for(rec.handler_entered.wait(), 5)
    held_at = rec.samples()
    assert path.backlog_ms > 0 and held_at < len(resampled(frames))
    gate.set()
    await asyncio.wait_for(path.drain(), 5)
    assert path.backlog_ms == 0
    assert np.array_equal(np.concatenate(rec.audio), resampled(frames))


async def test_the_backlog_is_bounded_newest_audio_kept() -> None:
    gate = asyncio.Event()
    rec = Recorder(nowait=True, gate=gate)
    path = rec.path(detector(), max_backlog_ms=200.0)
    frames = split(caller(), 20)
    for frame in frames:
        path.feed(frame)
    await asyncio.wait_for(rec.handler_entered.wait(), 5)
    before = next(k for k in range(1, len(frames)) if len(resampled(frames[:k])) == rec.samples())
    assert path.backlog_ms <= 200.0
    assert path.dropped > 0
    gate.set()
    await asyncio.wait_for(path.drain(), 5)
    # the oldest waiting frames went; everything else arrived, in order
    kept = frames[:before] + frames[before + path.dropped :]
    assert len(kept) == len(frames) - path.dropped
    assert np.array_equal(np.concatenate(rec.audio), resampled(kept))


async def test_pull_delivery_gives_the_same_audio() -> None:
    rec = Recorder(nowait=True)
    path = rec.path(detector())
    frames = split(caller(), 20)

    async def gen():  # type: ignore[no-untyped-def]
        for f in frames:
            yield f

    await asyncio.wait_for(path.run(gen()), 5)
    assert np.array_equal(np.concatenate(rec.audio), resampled(frames))
    assert [k for k, _ in rec.log] == ["start", "end"]


async def test_queued_input_delivers_queued_frames_first_then_pushes() -> None:
    rec = Recorder(nowait=True)
    path = rec.path(None)
    source = QueuedAudioInput(max_queue_ms=10_000, frame_ms=20)
    frames = split(caller(), 20)
    half = len(frames) // 2
    for f in frames[:half]:
        source.put(f)  # before the session attached
    served = asyncio.get_running_loop().create_task(path.serve(source))
    await asyncio.sleep(0)
    for f in frames[half:]:
        source.put(f)
    source.close()
    await asyncio.wait_for(served, 5)
    assert np.array_equal(np.concatenate(rec.audio), resampled(frames))


def test_webrtcvad_runs_at_the_callers_rate_when_it_is_cheap() -> None:
    """A 16 kHz caller is classified as is (no resample for the VAD), with the same
    decisions as the old path that resampled the backend's 24 kHz audio to 16 kHz."""
    audio = caller(16000)
    det = TurnDetector(WebRTCVAD(), input_rate=24000)
    r = Resampler(16000, 24000, quality=LOW_LATENCY)
    events = []
    for f in split(audio, 20):
        out = r.push(f)
        if out is not None:
            events += det.push(out, f)
    assert det.vad.sample_rate == 16000
    assert [type(e) for e in events] == [SpeechStart, SpeechEnd]
    # prefixes stay at the backend rate (they are what the backend is sent)
    assert all(f.sample_rate == 24000 for f in events[0].prefix)  # type: ignore[union-attr]
    ref = TurnDetector(WebRTCVAD(), input_rate=24000)
    r2 = Resampler(16000, 24000, quality=LOW_LATENCY)
    ref_events = []
    for f in split(audio, 20):
        out = r2.push(f)
        if out is not None:
            ref_events += ref.push(out)
    assert [type(e) for e in ref_events] == [SpeechStart, SpeechEnd]
    assert abs(events[0].at_ms - ref_events[0].at_ms) <= 40
    assert abs(events[1].at_ms - ref_events[1].at_ms) <= 40


@pytest.mark.parametrize(("rate", "vad_rate"), [(8000, 8000), (32000, 32000), (48000, 16000)])
def test_webrtcvad_rate_chosen_from_the_callers(rate: int, vad_rate: int) -> None:
    """8/16/32 kHz run natively; 48 kHz is resampled to 16 kHz (cheaper than webrtcvad's own)."""
    det = TurnDetector(WebRTCVAD(), input_rate=24000)
    det.push(AudioFrame.silence(0.02, 24000), AudioFrame.silence(0.02, rate))
    assert det.vad.sample_rate == vad_rate


def test_a_vad_with_a_fixed_rate_is_resampled_for() -> None:
    det = TurnDetector(WebRTCVAD(sample_rate=16000), input_rate=24000)
    det.push(AudioFrame.silence(0.02, 24000), AudioFrame.silence(0.02, 8000))
    assert det.vad.sample_rate == 16000


async def test_a_queued_input_keeps_its_bound_and_reports_drops_when_pushing() -> None:
    """A device input's own limit (newest audio wins) holds for the pushed path too."""
    gate = asyncio.Event()
    rec = Recorder(nowait=True, gate=gate)
    path = rec.path(detector())
    source = QueuedAudioInput(max_queue_ms=200, frame_ms=20)
    served = asyncio.get_running_loop().create_task(path.serve(source))
    await asyncio.sleep(0)
    for f in split(caller(), 20):
        source.put(f)
    await asyncio.wait_for(rec.handler_entered.wait(), 5)
    assert path.backlog_ms <= 200.0
    assert source.dropped_frames > 0
    gate.set()
    source.close()
    await asyncio.wait_for(served, 5)
