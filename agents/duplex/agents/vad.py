"""Voice activity: a `VAD` scores frames, a `TurnDetector` turns scores into turns.

The detector's options are those of OpenAI's server VAD, so one configuration
serves a local VAD and a server one alike. Times are in audio milliseconds since
the stream started, so decisions do not depend on how fast frames arrive.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .audio import AudioFrame, FrameChunker
from .errors import AudioFormatError
from .resample import LOW_LATENCY, Resampler


class VADStream(ABC):
    """Per-call state of a VAD (models such as Silero carry state between frames)."""

    @abstractmethod
    def process(self, frame: AudioFrame) -> float:
        """Speech probability in [0, 1] for one frame of exactly `VAD.frame_samples`."""

    def reset(self) -> None:  # noqa: B027 - optional hook, stateless VADs need nothing
        """Forget state, e.g. when the input stream restarts."""


class VAD(ABC):
    """A frame classifier. Subclasses say which rate and frame size they need."""

    sample_rate: int = 16000
    frame_samples: int = 320

    @abstractmethod
    def stream(self) -> VADStream: ...

    @property
    def frame_ms(self) -> float:
        return 1000.0 * self.frame_samples / self.sample_rate

    def for_rate(self, sample_rate: int) -> VAD:
        """This VAD running at ``sample_rate`` if it can (so no resampling is needed), else self."""
        return self


class EnergyVAD(VAD):
    """A level threshold with no model: a dependency-free fallback for clean audio.

    Prefer `duplex.plugins.webrtcvad` or `duplex.plugins.silero` for real calls.
    """

    def __init__(
        self, *, sample_rate: int = 16000, frame_ms: int = 20, level: float = 0.02
    ) -> None:
        self.sample_rate = sample_rate
        self.frame_samples = sample_rate * frame_ms // 1000
        self.level = level

    def stream(self) -> VADStream:
        return _EnergyStream(self.level)


class _EnergyStream(VADStream):
    def __init__(self, level: float) -> None:
        self._level = level

    def process(self, frame: AudioFrame) -> float:
        return min(1.0, frame.rms() / (2 * self._level))


class EndOfTurnModel(ABC):
    """Judges from the turn's audio whether a pause ends it (e.g. Smart Turn).

    Asked once per pause, off the event loop: `predict` returns a future the
    detector checks on later frames, so a slow model never blocks the audio path.
    """

    #: The most audio (ending now) the model looks at; the detector keeps no more.
    max_audio_ms: float = 8000.0

    @abstractmethod
    def predict(self, audio: npt.NDArray[np.int16], sample_rate: int) -> Future[float]:
        """Probability in [0, 1] that the turn is complete, for mono int16 audio."""


@dataclass(frozen=True)
class TurnOptions:
    threshold: float = 0.5
    prefix_padding_ms: float = 300.0
    #: Silence that ends a turn when there is no end-of-turn model (or it failed).
    silence_duration_ms: float = 500.0
    min_speech_ms: float = 100.0
    #: Optional semantic end of turn: asked after ``end_of_turn_pause_ms`` of silence;
    #: "complete" ends the turn at once, "incomplete" waits up to ``end_of_turn_max_ms``.
    end_of_turn: EndOfTurnModel | None = None
    end_of_turn_pause_ms: float = 200.0
    end_of_turn_max_ms: float = 1500.0
    end_of_turn_threshold: float = 0.5


@dataclass(frozen=True)
class SpeechStart:
    #: Audio time of the first voiced frame.
    at_ms: float
    #: Audio from ``prefix_padding_ms`` before the onset up to now, at the input rate.
    prefix: tuple[AudioFrame, ...]


@dataclass(frozen=True)
class SpeechEnd:
    #: Audio time the last voiced frame ended.
    at_ms: float
    speech_ms: float
    #: The end-of-turn model's probability when it ended the turn, else None.
    end_of_turn: float | None = None


TurnEvent = SpeechStart | SpeechEnd


class TurnDetector:
    """Feeds frames at any rate through the VAD and reports speech starts and ends."""

    def __init__(
        self, vad: VAD, options: TurnOptions | None = None, *, input_rate: int = 16000
    ) -> None:
        self._base_vad = vad
        self.vad = vad
        self.options = options or TurnOptions()
        self.input_rate = input_rate
        self._stream = vad.stream()
        # A VAD needs no hi-fi filter, and HQ's bursts would delay barge-in by up to 37 ms.
        self._resampler = Resampler(input_rate, vad.sample_rate, quality=LOW_LATENCY)
        self._chunker = FrameChunker(vad.sample_rate, 1, vad.frame_ms)
        self._vad_source_rate = input_rate
        self._rate_chosen = False
        self._vad_samples = 0  # audio time, in VAD-rate samples already classified
        # (input ms at the frame's end, frame): what a SpeechStart prefix may need
        self._history: deque[tuple[float, AudioFrame]] = deque()
        self._input_ms = 0.0
        self.speaking = False
        self._run_start_ms: float | None = None  # first voiced frame of the current run
        self._last_voiced_end_ms = 0.0
        self._speech_start_ms = 0.0
        self.last_probability = 0.0
        # End-of-turn model: the turn's audio so far, and the question asked at this pause.
        self._turn_audio: deque[AudioFrame] = deque()
        self._turn_audio_ms = 0.0
        self._eot: Future[float] | None = None
        self._eot_failed = False
        #: The model's answer at the latest pause (None before it answered).
        self.end_of_turn_probability: float | None = None

    @property
    def speech_ms(self) -> float:
        """How long the current speech has lasted (0 when silent)."""
        return self._last_voiced_end_ms - self._speech_start_ms if self.speaking else 0.0

    @property
    def audio_ms(self) -> float:
        return self._input_ms

    def push(self, frame: AudioFrame, vad_audio: AudioFrame | None = None) -> list[TurnEvent]:
        """Frames must be mono at ``input_rate``; returns the events they complete.

        ``vad_audio`` is the same audio at another rate (e.g. the caller's own, before
        it was resampled for the backend): the VAD classifies that instead, at that
        rate when it runs there natively, so no second resample is needed. Prefixes
        and the end-of-turn model's audio still come from ``frame``.
        """
        if frame.channels != 1 or frame.sample_rate != self.input_rate:
            raise AudioFormatError(
                f"turn detector expects mono {self.input_rate} Hz, got "
                f"{frame.channels} ch at {frame.sample_rate} Hz"
            )
        events: list[TurnEvent] = []
        self._input_ms += 1000.0 * frame.data.shape[0] / self.input_rate  # its duration_ms
        self._history.append((self._input_ms, frame))
        if self.speaking:
            self._keep_turn_audio(frame)
        source = frame if vad_audio is None else vad_audio
        if source.sample_rate != self._vad_source_rate or not self._rate_chosen:
            self._feed_from(source.sample_rate)
        if source.channels != 1:
            source = source.to_mono()
        rs = self._resampler
        resampled = source if rs.passthrough else rs.push(source)
        if resampled is not None:
            vad_rate = self.vad.sample_rate
            threshold = self.options.threshold
            for chunk in self._chunker.push(resampled):
                start_ms = 1000.0 * self._vad_samples / vad_rate
                self._vad_samples += chunk.data.shape[0]
                end_ms = 1000.0 * self._vad_samples / vad_rate
                p = self._stream.process(chunk)
                self.last_probability = p
                ev = self._decide(p >= threshold, start_ms, end_ms)
                if ev is not None:
                    events.append(ev)
                    if isinstance(ev, SpeechStart):
                        self._start_turn_audio(ev.prefix)
        self._trim_history()
        return events

    def _feed_from(self, rate: int) -> None:
        """Audio for the VAD now comes at ``rate``: run the VAD there if it can, else resample.

        The VAD's rate is chosen once, before anything was classified; a later change
        of the source rate only rebuilds the resampler (the VAD clock carries on).
        """
        if not self._rate_chosen:
            self._rate_chosen = True
            native = self._base_vad.for_rate(rate)
            if native is not self.vad:
                self.vad = native
                self._stream = native.stream()
                self._chunker = FrameChunker(native.sample_rate, 1, native.frame_ms)
        self._vad_source_rate = rate
        self._resampler = Resampler(rate, self.vad.sample_rate, quality=LOW_LATENCY)

    # --- end-of-turn model ------------------------------------------------------------
    def _start_turn_audio(self, prefix: tuple[AudioFrame, ...]) -> None:
        self._turn_audio.clear()
        self._turn_audio_ms = 0.0
        if self.options.end_of_turn is not None:
            for f in prefix:
                self._keep_turn_audio(f)

    def _keep_turn_audio(self, frame: AudioFrame) -> None:
        model = self.options.end_of_turn
        if model is None:
            return
        self._turn_audio.append(frame)
        self._turn_audio_ms += frame.duration_ms
        while self._turn_audio and (
            self._turn_audio_ms - self._turn_audio[0].duration_ms >= model.max_audio_ms
        ):
            self._turn_audio_ms -= self._turn_audio.popleft().duration_ms

    def _ask_model(self, model: EndOfTurnModel) -> None:
        self.end_of_turn_probability = None
        audio = (
            np.concatenate([f.to_mono().data[:, 0] for f in self._turn_audio])
            if self._turn_audio
            else np.zeros(0, np.int16)
        )
        try:
            self._eot = model.predict(audio, self.input_rate)
        except Exception:  # a broken model must not end calls: use the silence rule
            self._eot_failed = True

    def _model_verdict(self) -> float | None:
        """The model's probability once it has answered; marks a failure as such."""
        fut = self._eot
        if fut is None or not fut.done():
            return None
        if fut.cancelled() or fut.exception() is not None:
            self._eot, self._eot_failed = None, True
            return None
        self.end_of_turn_probability = fut.result()
        return self.end_of_turn_probability

    def _forget_question(self) -> None:
        if self._eot is not None:
            self._eot.cancel()  # harmless once it runs; the answer is simply ignored
        self._eot = None
        self._eot_failed = False

    def _silence_ends_turn(self, silence_ms: float) -> tuple[bool, float | None]:
        """Whether ``silence_ms`` after the last voiced frame ends the turn (and the model's p)."""
        opts = self.options
        model = opts.end_of_turn
        if model is None or self._eot_failed:
            return silence_ms >= opts.silence_duration_ms, None
        if silence_ms >= opts.end_of_turn_max_ms:
            return True, self.end_of_turn_probability
        if silence_ms < opts.end_of_turn_pause_ms:
            return False, None
        if self._eot is None:
            self._ask_model(model)
            if self._eot_failed:
                return silence_ms >= opts.silence_duration_ms, None
        p = self._model_verdict()
        if self._eot_failed:
            return silence_ms >= opts.silence_duration_ms, None
        if p is not None and p >= opts.end_of_turn_threshold:
            return True, p
        return False, None

    def _trim_history(self) -> None:
        """Keep only audio a future `SpeechStart` prefix can still need.

        Anchored on the VAD's clock (not the input's), so input frames of any
        length, and audio still inside the resampler or chunker, are kept.
        """
        history = self._history
        if self._run_start_ms is not None and not self.speaking:
            earliest_onset = self._run_start_ms
        else:
            earliest_onset = 1000.0 * self._vad_samples / self.vad.sample_rate
        since = earliest_onset - self.options.prefix_padding_ms
        while history and history[0][0] <= since:
            history.popleft()

    def _decide(self, voiced: bool, start_ms: float, end_ms: float) -> TurnEvent | None:
        opts = self.options
        if voiced:
            if self._eot is not None or self._eot_failed:
                self._forget_question()  # speech resumed: that pause was not the end
            if self._run_start_ms is None:
                self._run_start_ms = start_ms
            self._last_voiced_end_ms = end_ms
            if not self.speaking and end_ms - self._run_start_ms >= opts.min_speech_ms:
                self.speaking = True
                self._speech_start_ms = self._run_start_ms
                return SpeechStart(self._run_start_ms, self._prefix(self._run_start_ms))
            return None
        if not self.speaking:
            self._run_start_ms = None
            return None
        ends, p = self._silence_ends_turn(end_ms - self._last_voiced_end_ms)
        if ends:
            self.speaking = False
            self._run_start_ms = None
            self._forget_question()
            self._turn_audio.clear()
            self._turn_audio_ms = 0.0
            return SpeechEnd(
                self._last_voiced_end_ms, self._last_voiced_end_ms - self._speech_start_ms, p
            )
        return None

    def _prefix(self, onset_ms: float) -> tuple[AudioFrame, ...]:
        since = onset_ms - self.options.prefix_padding_ms
        return tuple(f for end, f in self._history if end > since)

    def reset(self) -> None:
        self._stream.reset()
        self._resampler.reset()
        self._chunker.clear()
        # Audio dropped from the resampler and chunker was never classified: realign
        # the VAD clock with the input clock so later onsets are not reported early.
        self._vad_samples = round(self._input_ms * self.vad.sample_rate / 1000.0)
        self.speaking = False
        self._run_start_ms = None
        self._forget_question()
        self._turn_audio.clear()
        self._turn_audio_ms = 0.0
