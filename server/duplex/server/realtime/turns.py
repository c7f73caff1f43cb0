"""The input audio buffer: what caller audio reaches the cascade, and where turns start and end.

With server VAD only speech (plus ``prefix_padding_ms`` before it) goes to speech-to-text,
as a local-VAD session does; with ``turn_detection: null`` everything appended goes, and
the client's commit ends the turn. Times are audio milliseconds since the session began.
"""

from __future__ import annotations

from dataclasses import dataclass

from duplex.agents.audio import AudioFrame
from duplex.agents.vad import VAD, SpeechEnd, SpeechStart, TurnDetector, TurnOptions

from .config import TurnDetection


@dataclass(frozen=True)
class Forward:
    frames: tuple[AudioFrame, ...]


@dataclass(frozen=True)
class Started:
    audio_start_ms: int


@dataclass(frozen=True)
class Stopped:
    audio_end_ms: int


Action = Forward | Started | Stopped


class InputBuffer:
    def __init__(self, vad: VAD, rate: int) -> None:
        self._vad = vad
        self.rate = rate
        self._turns: TurnDetection | None = None
        self._detector: TurnDetector | None = None
        self._offset_ms = 0.0
        #: All audio appended so far (the session's audio clock).
        self.input_ms = 0.0
        #: Audio forwarded since the last commit or clear (what a commit would hold).
        self.buffered_ms = 0.0

    @property
    def server_vad(self) -> bool:
        return self._turns is not None

    @property
    def speaking(self) -> bool:
        return self._detector is not None and self._detector.speaking

    def configure(self, turns: TurnDetection | None) -> None:
        if turns == self._turns:
            return
        self._turns = turns
        self._detector = None

    def _ensure_detector(self) -> TurnDetector:
        if self._detector is None:
            assert self._turns is not None
            opts = TurnOptions(
                threshold=self._turns.threshold,
                prefix_padding_ms=float(self._turns.prefix_padding_ms),
                silence_duration_ms=float(self._turns.silence_duration_ms),
            )
            self._detector = TurnDetector(self._vad, opts, input_rate=self.rate)
            self._offset_ms = self.input_ms
        return self._detector

    def push(self, frame: AudioFrame) -> list[Action]:
        self.input_ms += frame.duration_ms
        if self._turns is None:
            self.buffered_ms += frame.duration_ms
            return [Forward((frame,))]
        detector = self._ensure_detector()
        was_speaking = detector.speaking
        actions: list[Action] = []
        forwarded = False
        for ev in detector.push(frame):
            at = round(self._offset_ms + ev.at_ms)
            if isinstance(ev, SpeechStart):
                actions.append(Started(at))
                actions.append(Forward(ev.prefix))
                self.buffered_ms += sum(f.duration_ms for f in ev.prefix)
                forwarded = True
            elif isinstance(ev, SpeechEnd):
                if was_speaking and not forwarded:
                    actions.append(Forward((frame,)))
                    self.buffered_ms += frame.duration_ms
                    forwarded = True
                actions.append(Stopped(at))
        if was_speaking and not forwarded:
            actions.append(Forward((frame,)))
            self.buffered_ms += frame.duration_ms
        return actions

    def committed(self) -> None:
        """A turn ended (VAD or the client's commit): the next speech is a new turn."""
        self.buffered_ms = 0.0
        if self._detector is not None and self._detector.speaking:
            self._detector = None  # a manual commit mid-speech starts the next turn afresh

    def clear(self) -> None:
        self.buffered_ms = 0.0
        self._detector = None
