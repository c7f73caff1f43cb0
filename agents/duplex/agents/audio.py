"""Audio frames and the conversions every edge of the pipeline needs.

Frames are int16 numpy arrays shaped ``(samples, channels)``; conversions to
other frame types (livekit, PyAV, G.711 bytes) live at the edge that needs them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from .errors import AudioFormatError

Int16Array = npt.NDArray[np.int16]
Float32Array = npt.NDArray[np.float32]

#: Sample rates a frame may carry; anything else is almost always a bug upstream.
SUPPORTED_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)
MAX_FRAME_SECONDS = 10.0


@dataclass(frozen=True, eq=False)
class AudioFrame:
    """Interleaved int16 PCM with its rate; immutable so it can be shared freely."""

    data: Int16Array
    sample_rate: int
    channels: int = 1
    _checked: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if self._checked:
            return
        if not isinstance(self.data, np.ndarray):
            raise AudioFormatError(
                f"frame data must be a numpy array, got {type(self.data).__name__}"
            )
        if self.data.dtype != np.int16:
            raise AudioFormatError(
                f"frame data must be int16 PCM, got {self.data.dtype}; "
                "use AudioFrame.from_float() for float audio"
            )
        if self.sample_rate not in SUPPORTED_RATES:
            raise AudioFormatError(
                f"unsupported sample rate {self.sample_rate} Hz (supported: {SUPPORTED_RATES})"
            )
        if self.channels < 1 or self.channels > 8:
            raise AudioFormatError(f"channels must be 1..8, got {self.channels}")
        data = self.data
        if data.ndim == 1:
            if data.size % self.channels:
                raise AudioFormatError(
                    f"{data.size} samples do not divide into {self.channels} channels"
                )
            data = data.reshape(-1, self.channels)
        elif data.ndim != 2 or data.shape[1] != self.channels:
            raise AudioFormatError(
                f"frame shape {data.shape} does not match {self.channels} channel(s)"
            )
        if data.shape[0] == 0:
            raise AudioFormatError("empty audio frame")
        if data.shape[0] > MAX_FRAME_SECONDS * self.sample_rate:
            raise AudioFormatError(
                f"frame of {data.shape[0] / self.sample_rate:.1f} s is over the "
                f"{MAX_FRAME_SECONDS:.0f} s limit; split it"
            )
        object.__setattr__(self, "data", np.ascontiguousarray(data))

    # construction ---------------------------------------------------------------------
    @classmethod
    def from_pcm16(cls, pcm: bytes, sample_rate: int, channels: int = 1) -> AudioFrame:
        """Little-endian PCM16 bytes, as every wire format carries them."""
        if not isinstance(pcm, (bytes, bytearray, memoryview)):
            raise AudioFormatError(f"PCM must be bytes, got {type(pcm).__name__}")
        if len(pcm) % (2 * channels):
            raise AudioFormatError(
                f"{len(pcm)} bytes is not a whole number of {channels}-channel PCM16 samples"
            )
        samples = np.frombuffer(bytes(pcm), dtype="<i2").astype(np.int16, copy=False)
        return cls(samples, sample_rate, channels)

    @classmethod
    def from_float(cls, samples: npt.ArrayLike, sample_rate: int, channels: int = 1) -> AudioFrame:
        """Float audio in [-1, 1]; NaN or infinity is refused rather than clipped to noise."""
        arr = np.asarray(samples)
        if arr.dtype.kind != "f":
            raise AudioFormatError(f"from_float needs float samples, got {arr.dtype}")
        if not np.all(np.isfinite(arr)):
            raise AudioFormatError("audio contains NaN or infinite samples")
        return cls(float_to_pcm16(arr), sample_rate, channels)

    @classmethod
    def silence(cls, duration_s: float, sample_rate: int, channels: int = 1) -> AudioFrame:
        n = max(1, round(duration_s * sample_rate))
        return cls(np.zeros((n, channels), dtype=np.int16), sample_rate, channels)

    # views ------------------------------------------------------------------------------
    @property
    def samples_per_channel(self) -> int:
        return int(self.data.shape[0])

    @property
    def duration(self) -> float:
        """Seconds of audio in the frame."""
        return self.samples_per_channel / self.sample_rate

    @property
    def duration_ms(self) -> float:
        return 1000.0 * self.samples_per_channel / self.sample_rate

    def to_pcm16(self) -> bytes:
        return self.data.astype("<i2", copy=False).tobytes()

    def to_float(self) -> Float32Array:
        return pcm16_to_float(self.data)

    def to_mono(self) -> AudioFrame:
        if self.channels == 1:
            return self
        mixed = self.data.astype(np.int32).mean(axis=1)
        return AudioFrame(
            np.clip(np.rint(mixed), -32768, 32767).astype(np.int16).reshape(-1, 1),
            self.sample_rate,
            1,
            _checked=True,
        )

    def slice(self, start: int, stop: int) -> AudioFrame:
        """Samples ``[start, stop)`` per channel (no copy)."""
        return trusted_frame(self.data[start:stop], self.sample_rate, self.channels)

    def rms(self) -> float:
        """Root-mean-square level in [0, 1]."""
        f = self.data.astype(np.float32) / 32768.0
        return float(math.sqrt(float(np.mean(f * f))))

    def __len__(self) -> int:
        return self.samples_per_channel

    @staticmethod
    def concat(frames: list[AudioFrame]) -> AudioFrame:
        if not frames:
            raise AudioFormatError("nothing to concatenate")
        rate, ch = frames[0].sample_rate, frames[0].channels
        for f in frames:
            if f.sample_rate != rate or f.channels != ch:
                raise AudioFormatError("cannot concatenate frames of different formats")
        return AudioFrame(np.concatenate([f.data for f in frames]), rate, ch, _checked=True)


_new_object = object.__new__


def trusted_frame(data: Int16Array, sample_rate: int, channels: int = 1) -> AudioFrame:
    """A frame of data already known good (int16, C-contiguous, shaped ``(n, channels)``).

    For the per-frame hot paths (resampling, chunking): skips validation and the
    frozen dataclass's ``__init__`` (~1 us a frame), giving the same immutable frame.
    """
    frame: AudioFrame = _new_object(AudioFrame)
    d = frame.__dict__
    d["data"] = data
    d["sample_rate"] = sample_rate
    d["channels"] = channels
    return frame


def float_to_pcm16(samples: npt.ArrayLike) -> Int16Array:
    # The same 32768 scale as pcm16_to_float, so int16 -> float -> int16 is lossless.
    arr = np.asarray(samples, dtype=np.float32)
    out: Int16Array = np.clip(np.rint(arr * 32768.0), -32768, 32767).astype(np.int16)
    return out


def pcm16_to_float(samples: Int16Array) -> Float32Array:
    return (samples.astype(np.float32) / 32768.0).astype(np.float32)


def sound_end(samples: Float32Array, sample_rate: int, *, below_peak: float = 0.03) -> int | None:
    """Sample index where the last sound ends: the end of the last 10 ms window whose RMS
    is within ``below_peak`` of the loudest window's (0.03: 30 dB). None when no window is.

    Level, not a VAD: what the turn models use to find where the speech of a clip ends.
    """
    w = sample_rate // 100
    n = len(samples) // w
    if n == 0:
        return None
    windows = samples[: n * w].reshape(n, w)
    rms = np.sqrt(np.mean(np.square(windows, dtype=np.float64), axis=1))
    loud = np.flatnonzero(rms > rms.max() * below_peak)
    return (int(loud[-1]) + 1) * w if loud.size else None


class FrameChunker:
    """Cuts a stream of arbitrary-length frames into fixed-size frames.

    Needed because VADs take exact 10/20/30 ms frames and playout stops on frame
    boundaries: the smaller the frame, the faster an interruption takes effect.
    """

    def __init__(self, sample_rate: int, channels: int = 1, frame_ms: float = 20.0) -> None:
        self.sample_rate = sample_rate
        self.channels = channels
        self.frame_samples = round(sample_rate * frame_ms / 1000.0)
        if self.frame_samples <= 0:
            raise AudioFormatError(f"frame of {frame_ms} ms is too short")
        self._pending: list[Int16Array] = []
        self._pending_len = 0

    @property
    def pending_samples(self) -> int:
        return self._pending_len

    def push(self, frame: AudioFrame) -> list[AudioFrame]:
        """Every full frame now available; eager, so the input is buffered even if unread."""
        if frame.sample_rate != self.sample_rate or frame.channels != self.channels:
            raise AudioFormatError(
                f"chunker expects {self.sample_rate} Hz/{self.channels} ch, got "
                f"{frame.sample_rate} Hz/{frame.channels} ch"
            )
        n = frame.data.shape[0]
        if not self._pending_len and n == self.frame_samples:
            return [frame]  # the common case: frames already the right size
        self._pending.append(frame.data)
        self._pending_len += n
        if self._pending_len < self.frame_samples:
            return []
        buf = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        n_full = self._pending_len // self.frame_samples
        size, rate, ch = self.frame_samples, self.sample_rate, self.channels
        out = [trusted_frame(buf[i * size : (i + 1) * size], rate, ch) for i in range(n_full)]
        rest = buf[n_full * size :]
        self._pending = [rest] if len(rest) else []
        self._pending_len = len(rest)
        return out

    def flush(self, pad: bool = False) -> AudioFrame | None:
        """The remainder, zero-padded to a full frame when ``pad``."""
        if not self._pending_len:
            return None
        buf = np.concatenate(self._pending)
        self._pending, self._pending_len = [], 0
        if pad and len(buf) < self.frame_samples:
            buf = np.concatenate(
                [buf, np.zeros((self.frame_samples - len(buf), self.channels), dtype=np.int16)]
            )
        return AudioFrame(buf, self.sample_rate, self.channels, _checked=True)

    def clear(self) -> None:
        self._pending, self._pending_len = [], 0
