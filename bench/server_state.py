"""What the benchmark server records per session, and its server VAD."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from . import config as C

_ids = itertools.count(1)


def new_id(prefix: str) -> str:
    return f"{prefix}_{next(_ids):08d}"


@dataclass
class TurnRecord:
    #: Receipt time of the append holding the turn's last speech sample.
    last_speech_at: float
    stopped_at: float


@dataclass
class ResponseRecord:
    created_at: float
    #: The turn that caused it (its last speech receipt), None for client-requested ones.
    turn_last_speech_at: float | None
    first_delta_at: float | None = None
    ended_at: float | None = None
    status: str = "in_progress"
    reason: str | None = None
    audio_ms: float = 0.0


@dataclass
class SessionRecord:
    connected_at: float
    speech_started_at: list[float] = field(default_factory=list)
    turns: list[TurnRecord] = field(default_factory=list)
    responses: list[ResponseRecord] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    received: Counter[str] = field(default_factory=Counter)
    appends: int = 0


class ServerStats:
    def __init__(self) -> None:
        self.sessions: dict[str, SessionRecord] = {}
        self.errors: Counter[str] = Counter()

    def session(self, sid: str) -> SessionRecord:
        rec = self.sessions.get(sid)
        if rec is None:
            rec = self.sessions[sid] = SessionRecord(time.monotonic())
        return rec

    def snapshot(self, open_connections: int) -> dict[str, Any]:
        return {
            "open_connections": open_connections,
            "errors": dict(self.errors),
            "sessions": {
                sid: {
                    "connected_at": r.connected_at,
                    "speech_started_at": r.speech_started_at,
                    "turns": [asdict(t) for t in r.turns],
                    "responses": [asdict(x) for x in r.responses],
                    "errors": dict(r.errors),
                    "received": dict(r.received),
                    "appends": r.appends,
                }
                for sid, r in self.sessions.items()
            },
        }


class EnergyVAD:
    """OpenAI-style server VAD on 10 ms blocks: start after min speech, stop after silence."""

    BLOCK = C.SERVER_RATE // 100

    def __init__(self) -> None:
        self._rest = np.zeros(0, dtype=np.int16)
        self.audio_ms = 0.0
        self.speaking = False
        self._run_start: float | None = None
        self._last_voiced_end = 0.0

    def push(self, pcm: np.ndarray) -> list[tuple[str, float]]:
        if self._rest.size:
            pcm = np.concatenate([self._rest, pcm])
        n = pcm.size // self.BLOCK
        self._rest = pcm[n * self.BLOCK :]
        if n == 0:
            return []
        blocks = pcm[: n * self.BLOCK].reshape(n, self.BLOCK).astype(np.float32)
        voiced = np.mean(blocks * blocks, axis=1) >= C.VAD_RMS * C.VAD_RMS
        events: list[tuple[str, float]] = []
        for v in voiced.tolist():
            start, self.audio_ms = self.audio_ms, self.audio_ms + 10.0
            ev = self._decide(bool(v), start, self.audio_ms)
            if ev is not None:
                events.append(ev)
        return events

    def _decide(self, voiced: bool, start: float, end: float) -> tuple[str, float] | None:
        if voiced:
            if self._run_start is None:
                self._run_start = start
            self._last_voiced_end = end
            if not self.speaking and end - self._run_start >= C.VAD_MIN_SPEECH_MS:
                self.speaking = True
                return ("started", self._run_start)
            return None
        if not self.speaking:
            self._run_start = None
        elif end - self._last_voiced_end >= C.VAD_SILENCE_MS:
            self.speaking = False
            self._run_start = None
            return ("stopped", self._last_voiced_end)
        return None
