"""Sound devices: listing them and resolving ``--input-device`` / ``--output-device``.

sounddevice needs the PortAudio library (Debian: ``apt-get install libportaudio2``);
without it, or without any device, the console explains that instead of a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

from duplex.agents.errors import ConfigurationError


class AudioDeviceError(ConfigurationError):
    """No usable sound device (or PortAudio is missing); the message says what to do."""


def sounddevice() -> ModuleType:
    """Import sounddevice, turning a missing PortAudio into advice."""
    try:
        import sounddevice as sd
    except OSError as e:  # raised by sounddevice when libportaudio is not installed
        raise AudioDeviceError(
            f"PortAudio is not available ({e}); install it: apt-get install libportaudio2"
        ) from e
    module: ModuleType = sd
    return module


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    host_api: str
    max_input_channels: int
    max_output_channels: int
    default_samplerate: float
    is_default_input: bool = False
    is_default_output: bool = False

    def describe(self) -> str:
        marks = ("<" if self.is_default_input else " ") + (">" if self.is_default_output else " ")
        return (
            f"{marks} {self.index:3d} {self.name} ({self.host_api}; "
            f"{self.max_input_channels} in, {self.max_output_channels} out, "
            f"{self.default_samplerate:.0f} Hz)"
        )


def list_devices() -> list[DeviceInfo]:
    sd = sounddevice()
    apis = sd.query_hostapis()
    default_in, default_out = _defaults(sd)
    out = []
    for raw in sd.query_devices():
        d: dict[str, Any] = dict(raw)
        out.append(
            DeviceInfo(
                index=int(d["index"]),
                name=str(d["name"]),
                host_api=str(apis[d["hostapi"]]["name"]),
                max_input_channels=int(d["max_input_channels"]),
                max_output_channels=int(d["max_output_channels"]),
                default_samplerate=float(d["default_samplerate"]),
                is_default_input=int(d["index"]) == default_in,
                is_default_output=int(d["index"]) == default_out,
            )
        )
    return out


def _defaults(sd: ModuleType) -> tuple[int, int]:
    dev = sd.default.device
    return int(dev[0]) if dev[0] is not None else -1, int(dev[1]) if dev[1] is not None else -1


def resolve_device(spec: str | int | None, *, kind: str) -> int | None:
    """``None`` (the default device), an index, or a case-insensitive part of a name."""
    devices = list_devices()
    channels = "max_input_channels" if kind == "input" else "max_output_channels"
    usable = [d for d in devices if getattr(d, channels) > 0]
    if not usable:
        raise AudioDeviceError(
            f"no {kind} sound device found; list them with --list-devices "
            "(on a server, a PulseAudio null sink gives virtual devices)"
        )
    if spec is None or spec == "":
        return None
    if isinstance(spec, int) or str(spec).isdigit():
        index = int(spec)
        if not any(d.index == index for d in usable):
            raise AudioDeviceError(f"device {index} is not an {kind} device; see --list-devices")
        return index
    matches = [d for d in usable if str(spec).lower() in d.name.lower()]
    if not matches:
        raise AudioDeviceError(f"no {kind} device matches {spec!r}; see --list-devices")
    exact = [d for d in matches if d.name.lower() == str(spec).lower()]
    return (exact or matches)[0].index
