"""A simulated caller: a continuous microphone with speech spliced in, reacting to what it hears.

Cycle: noise (a random lead, so callers are staggered) -> a question -> wait for
the reply -> once BARGE_AFTER_MS of it was heard, talk over it (a barge-in) ->
wait for the reply to that -> a pause -> again. The caller records, on the
real clock, the delivery time of the frame holding each utterance's last speech
sample and the true onset of each barge-in; the framework is never asked.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import config as C
from .clock import FRAME_S, PlayoutClock
from .speech import SpeechBank, Utterance

#: Deliver one frame of caller audio (mono int16, FRAME_SAMPLES) to the framework.
Push = Callable[[np.ndarray], None]


@dataclass
class UtteranceRecord:
    kind: str  # "question" | "barge_in"
    #: When the first speech sample was captured (the frame's delivery minus its length).
    onset_at: float
    #: Delivery time of the frame holding the last speech sample.
    last_speech_at: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "onset_at": self.onset_at, "last_speech_at": self.last_speech_at}


class Caller:
    def __init__(
        self,
        index: int,
        bank: SpeechBank,
        noise: np.ndarray,
        clock: PlayoutClock,
        push: Push,
        rng: random.Random,
    ) -> None:
        self.index = index
        self._bank = bank
        self._noise = noise
        self._noise_pos = rng.randrange(0, noise.size - C.FRAME_SAMPLES)
        self.clock = clock
        self._push = push
        self._rng = rng
        self.utterances: list[UtteranceRecord] = []
        self.timeouts = 0
        self.active = True
        self._state = "gap"
        self._wait_frames = int(rng.uniform(0.2, 2.0) / FRAME_S)  # the stagger
        self._speech: Utterance | None = None
        self._pos = 0
        self._record: UtteranceRecord | None = None
        self._deadline = 0.0
        self._cycle = 0

    # --- one 20 ms frame ------------------------------------------------------------------
    def tick(self, due: float) -> None:
        if not self.active:
            return
        frame = self._next_noise()
        if self._speech is not None:
            self._mix_speech(frame, due)
        self._push(frame)
        self._advance(due)

    def _next_noise(self) -> np.ndarray:
        n = C.FRAME_SAMPLES
        if self._noise_pos + n > self._noise.size:
            self._noise_pos = 0
        frame = self._noise[self._noise_pos : self._noise_pos + n].copy()
        self._noise_pos += n
        return frame

    def _mix_speech(self, frame: np.ndarray, due: float) -> None:
        sp, rec = self._speech, self._record
        assert sp is not None and rec is not None
        start = self._pos
        stop = min(start + C.FRAME_SAMPLES, sp.pcm.size)
        np.add(
            frame[: stop - start], sp.pcm[start:stop], out=frame[: stop - start], casting="unsafe"
        )
        if start <= sp.last_speech < stop:
            rec.last_speech_at = due
        self._pos = stop
        if stop >= sp.pcm.size:
            self._speech = None

    def _say(self, kind: str, due: float) -> None:
        options = self._bank.questions if kind == "question" else self._bank.barge_ins
        self._speech = options[(self.index + self._cycle) % len(options)]
        self._pos = 0
        # Speech starts with the next frame: delivered at due + FRAME_S, captured from ``due``.
        self._record = UtteranceRecord(kind, onset_at=due)
        self.utterances.append(self._record)

    # --- the script -----------------------------------------------------------------------
    def _advance(self, due: float) -> None:
        st = self._state
        if st == "gap":
            self._wait_frames -= 1
            if self._wait_frames <= 0:
                self._start_speech("question", due)
        elif st in ("question", "barge_in"):
            if self._speech is None:
                self._state = "await_reply" if st == "question" else "await_answer"
                self._deadline = due + C.REPLY_TIMEOUT_S
        elif st == "await_reply":
            seg = self.clock.current
            rec = self._record
            heard = (
                seg is not None
                and rec is not None
                and seg.start_at > rec.last_speech_at
                and seg.stopped_at is None
                and seg.played_ms >= C.BARGE_AFTER_MS
            )
            if heard:
                self._start_speech("barge_in", due)
            elif due > self._deadline:
                self._give_up()
        elif st == "await_answer":
            seg = self.clock.current
            rec = self._record
            done = (
                seg is not None
                and rec is not None
                and seg.start_at > rec.last_speech_at
                and (seg.stopped_at is not None or (not self.clock.playing and seg.played_ms > 0))
            )
            if done:
                self._pause()
            elif due > self._deadline:
                self._give_up()

    def _start_speech(self, kind: str, due: float) -> None:
        self._state = kind
        self._say(kind, due)

    def _pause(self) -> None:
        self._cycle += 1
        self._state = "gap"
        self._wait_frames = int(self._rng.uniform(0.5, 1.5) / FRAME_S)

    def _give_up(self) -> None:
        self.timeouts += 1
        self._pause()

    def as_dict(self) -> dict[str, Any]:
        return {
            "utterances": [u.as_dict() for u in self.utterances],
            "segments": [s.as_dict() for s in self.clock.segments],
            "stops": list(self.clock.stops),
            "timeouts": self.timeouts,
        }
