"""Wire audio <-> the cascade's audio: base64 PCM16 24 kHz or G.711 μ-law/A-law 8 kHz.

Caller audio is resampled to the speech-to-text rate on arrival; reply audio from the
TTS rate to the session's output format. Resamplers are stateful per stream (no clicks
at chunk edges) and low-latency on the input side (the VAD decides on the newest audio).
"""

from __future__ import annotations

import base64
import binascii

from duplex.agents import g711
from duplex.agents.audio import AudioFrame
from duplex.agents.errors import AudioFormatError
from duplex.agents.resample import LOW_LATENCY, Resampler

from .config import AudioFormat
from .errors import ProtocolError

#: Rate of each wire format (GA only allows 24 kHz PCM; G.711 is 8 kHz by definition).
WIRE_RATE: dict[AudioFormat, int] = {"pcm16": 24000, "g711_ulaw": 8000, "g711_alaw": 8000}


def decode_b64(data: str, *, param: str = "audio") -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(
            "invalid_value", "Invalid 'audio': expected base64-encoded audio bytes.", param=param
        ) from None


class InputAudio:
    """Decodes appended chunks in the session's input format, at the STT's rate."""

    def __init__(self, fmt: AudioFormat, target_rate: int) -> None:
        self.format = fmt
        self.target_rate = target_rate
        self._resampler = Resampler(WIRE_RATE[fmt], target_rate, quality=LOW_LATENCY)

    def decode(self, payload: str) -> AudioFrame | None:
        """Audio at ``target_rate`` (None while the resampler fills); `ProtocolError` if bad."""
        raw = decode_b64(payload)
        if not raw:
            return None
        if self.format == "pcm16":
            if len(raw) % 2:
                raise ProtocolError(
                    "invalid_value",
                    f"Invalid 'audio': PCM16 needs an even number of bytes, got {len(raw)}.",
                    param="audio",
                )
            frame = AudioFrame.from_pcm16(raw, WIRE_RATE["pcm16"], 1)
        else:
            try:
                frame = g711.decode(raw, "ulaw" if self.format == "g711_ulaw" else "alaw", 8000)
            except AudioFormatError as e:
                raise ProtocolError(
                    "invalid_value", f"Invalid 'audio': {e}", param="audio"
                ) from None
        return self._resampler.push(frame)


class OutputAudio:
    """Encodes one reply item's audio in the session's output format, as base64."""

    def __init__(self, fmt: AudioFormat, source_rate: int) -> None:
        self.format = fmt
        self.source_rate = source_rate
        self._resampler = Resampler(source_rate, WIRE_RATE[fmt], quality=LOW_LATENCY)

    def _encode(self, frame: AudioFrame | None) -> str | None:
        if frame is None or len(frame) == 0:
            return None
        if self.format == "pcm16":
            raw = frame.to_pcm16()
        else:
            raw = g711.encode(frame, "ulaw" if self.format == "g711_ulaw" else "alaw")
        return base64.b64encode(raw).decode("ascii")

    def encode(self, frame: AudioFrame) -> str | None:
        if frame.sample_rate != self.source_rate:
            self.source_rate = frame.sample_rate
            self._resampler = Resampler(
                frame.sample_rate, WIRE_RATE[self.format], quality=LOW_LATENCY
            )
        return self._encode(self._resampler.push(frame.to_mono()))

    def flush(self) -> str | None:
        return self._encode(self._resampler.flush())
