"""Smart Turn from the installed pipecat-ai wheel: loading, features, verdicts, the shared queue."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from concurrent.futures import Future

import numpy as np
import pytest

from bench.offline_speech import COMPLETE
from duplex.agents.audio import AudioFrame
from duplex.agents.errors import ConfigurationError
from duplex.agents.vad import EndOfTurnModel, SpeechEnd, TurnDetector, TurnOptions
from duplex.plugins.piper import PiperTTS
from duplex.plugins.smart_turn import InferenceQueue, SmartTurn, bundled_model_path
from duplex.plugins.smart_turn.features import WINDOW_SAMPLES, features, last_window
from duplex.plugins.webrtcvad import WebRTCVAD

from ..speech import silence, split
from .utterances import PAUSED, paused, synth

pytestmark = pytest.mark.skipif(bundled_model_path() is None, reason="needs pipecat-ai")


@pytest.fixture(scope="module")
def model() -> SmartTurn:
    return SmartTurn()


def test_model_is_found_in_the_wheel_without_importing_pipecat() -> None:
    code = (
        "import sys\n"
        "from duplex.plugins.smart_turn import SmartTurn\n"
        "m = SmartTurn()\n"
        "print(m.model_path)\n"
        "print('pipecat' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout.split("\n")
    assert out[0].endswith("-cpu.onnx") and "pipecat/audio/turn/smart_turn/data" in out[0]
    assert out[1] == "False"


def test_a_missing_model_file_is_a_configuration_error(tmp_path: object) -> None:
    with pytest.raises(ConfigurationError, match="not found"):
        SmartTurn(model_path="/nonexistent/smart-turn.onnx")


@pytest.mark.parametrize("seconds", [0.4, 3.0, 8.0, 11.5])
def test_features_match_pipecats_reference(seconds: float) -> None:
    # pipecat's own numpy port of Whisper's extractor is the reference (imported in tests only).
    from pipecat.audio.turn.smart_turn._whisper_features import (
        compute_whisper_log_mel_features,
    )

    rng = np.random.default_rng(int(seconds * 10))
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    # A voiced-like signal (harmonics with a moving pitch) over noise, at a quiet level.
    audio = 0.05 * rng.standard_normal(n) + 0.2 * np.sin(2 * np.pi * (120 + 40 * t) * t)
    audio = audio.astype(np.float32)
    ours = features(audio)
    # The reference takes exactly 8 s; the model sees the last 8 s, front-padded.
    ref = compute_whisper_log_mel_features(last_window(audio))
    assert ours.shape == (1, 80, WINDOW_SAMPLES // 160)
    np.testing.assert_allclose(ours[0], ref, atol=1e-4)


async def test_complete_sentences_score_higher_than_ones_cut_mid_sentence(
    model: SmartTurn, piper: PiperTTS
) -> None:
    rate = piper.sample_rate
    quiet = np.zeros(int(0.3 * rate), np.int16)
    whole = [
        model.probability(np.concatenate([await synth(piper, text), quiet]), rate)
        for text in COMPLETE[:6]
    ]
    cut = [model.probability((await paused(piper, text)).head, rate) for text in PAUSED]
    assert sum(p > 0.5 for p in whole) >= 5, whole
    assert sum(p < 0.5 for p in cut) >= 5, cut
    assert np.mean(whole) - np.mean(cut) > 0.5, (whole, cut)


class _Recording(EndOfTurnModel):
    """Passes questions to the real model and keeps the futures, so the test can await them."""

    def __init__(self, inner: SmartTurn) -> None:
        self.inner = inner
        self.max_audio_ms = inner.max_audio_ms
        self.futures: list[Future[float]] = []

    def predict(self, audio: np.ndarray, sample_rate: int) -> Future[float]:
        fut = self.inner.predict(audio, sample_rate)
        self.futures.append(fut)
        return fut


async def test_one_shared_queue_serves_every_session(model: SmartTurn, piper: PiperTTS) -> None:
    n = 4
    queue = InferenceQueue()
    shared = SmartTurn(queue=queue)
    assert shared.queue is queue and model.queue is not queue
    clip = (await paused(piper, PAUSED[0])).audio
    rate = piper.sample_rate
    speech = AudioFrame(clip, rate)
    recorders = [_Recording(shared) for _ in range(n)]
    detectors = [
        TurnDetector(WebRTCVAD(2), TurnOptions(end_of_turn=r), input_rate=rate) for r in recorders
    ]
    ends: list[SpeechEnd | None] = [None] * n
    frames = split(silence(0.2, rate), 20) + split(speech, 20) + split(silence(0.3, rate), 20)
    for frame in frames:  # the calls' audio interleaved, as in one process
        for d in detectors:
            d.push(frame)
    # Every session asked once at its pause; the answers come from the one worker.
    assert all(len(r.futures) == 1 for r in recorders)
    await asyncio.gather(*(asyncio.wrap_future(r.futures[0]) for r in recorders))
    assert queue.served == n and queue.pending == 0
    tail = silence(0.02, rate)
    for i, d in enumerate(detectors):
        for ev in d.push(tail):
            if isinstance(ev, SpeechEnd):
                ends[i] = ev
    assert all(e is not None and e.end_of_turn is not None and e.end_of_turn > 0.5 for e in ends)


def test_a_full_queue_refuses_at_once_and_the_detector_falls_back() -> None:
    queue = InferenceQueue(max_pending=0)
    fut = queue.submit(lambda: 1.0)
    assert fut.done() and fut.exception() is not None and queue.refused == 1
