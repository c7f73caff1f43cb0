from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from .pulse import Pulse, PulseUnavailable, start_pulse


@pytest.fixture
def pulse(monkeypatch: pytest.MonkeyPatch) -> Iterator[Pulse]:
    """A private PulseAudio with virtual mic and speaker; skips only if it cannot start."""
    try:
        p = start_pulse()
    except PulseUnavailable as e:
        pytest.skip(f"PulseAudio cannot start here: {e}")
    for name in ("XDG_RUNTIME_DIR", "PULSE_SERVER"):
        monkeypatch.setenv(name, p.env[name])
    already = "sounddevice" in sys.modules
    try:
        from duplex.plugins.console.devices import sounddevice

        sd = sounddevice()
    except Exception as e:
        p.stop()
        pytest.skip(f"PortAudio unavailable: {e}")
    if already:
        # PortAudio lists devices once, at initialisation: make it see this daemon
        sd._terminate()
        sd._initialize()
    yield p
    p.stop()
