"""The local sound card (or the keyboard) as the call: ``agent console app.py``.

Needs the ``console`` extra (sounddevice) and the PortAudio library
(Debian: ``apt-get install libportaudio2``); echo cancellation uses livekit's rtc SDK.
"""

from .aec import EchoCanceller
from .audio import ConsoleAudioInput, ConsoleAudioOutput, DeviceStream
from .devices import AudioDeviceError, DeviceInfo, list_devices, resolve_device
from .transport import ConsoleTransport

__all__ = [
    "AudioDeviceError",
    "ConsoleAudioInput",
    "ConsoleAudioOutput",
    "ConsoleTransport",
    "DeviceInfo",
    "DeviceStream",
    "EchoCanceller",
    "list_devices",
    "resolve_device",
]
