"""A private PulseAudio daemon with virtual devices, for console tests.

    speaker  -> null sink ``vsink``; what the agent plays is recorded from ``vsink.monitor``
    mic feed -> null sink ``vmic``; ``paplay --device=vmic x.wav`` "speaks" into the microphone,
                whose source is ``virtmic`` (a mono remap of ``vmic.monitor``)

PortAudio reaches it through ALSA's ``pulse`` device; every client finds the
daemon through ``XDG_RUNTIME_DIR`` / ``PULSE_SERVER``. Debian packages needed:
pulseaudio, pulseaudio-utils (paplay, parec, pactl), libportaudio2, libasound2-plugins.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from duplex.agents.audio import AudioFrame
from duplex.agents.wav import write_wav


class PulseUnavailable(RuntimeError):
    pass


@dataclass
class Pulse:
    runtime_dir: Path
    process: subprocess.Popen[bytes]

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "XDG_RUNTIME_DIR": str(self.runtime_dir),
            "PULSE_SERVER": f"unix:{self.runtime_dir / 'pulse' / 'native'}",
        }

    def pactl(self, *args: str) -> str:
        return subprocess.run(
            ["pactl", *args], env=self.env, check=True, capture_output=True, text=True, timeout=10
        ).stdout.strip()

    def play_into_mic(self, frame: AudioFrame, path: Path) -> subprocess.Popen[bytes]:
        write_wav(path, frame)
        return subprocess.Popen(["paplay", "--device=vmic", str(path)], env=self.env)

    async def record_speaker(self, rate: int = 16000) -> SpeakerRecorder:
        proc = await asyncio.create_subprocess_exec(
            "parec",
            "--device=vsink.monitor",
            "--format=s16le",
            f"--rate={rate}",
            "--channels=1",
            "--latency-msec=20",
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
        )
        return SpeakerRecorder(proc, rate)

    def add_echo_path(self) -> str:
        """Route the speaker back into the microphone, as a laptop's air gap does."""
        return self.pactl(
            "load-module", "module-loopback", "source=vsink.monitor", "sink=vmic", "latency_msec=30"
        )

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        shutil.rmtree(self.runtime_dir, ignore_errors=True)


class SpeakerRecorder:
    """What the virtual speaker plays, read as it arrives.

    A null sink renders in chunks, so the device has not really "played" a block
    when PortAudio takes it: read until the sound has come and gone instead of
    stopping when the app thinks it is done.
    """

    def __init__(self, proc: asyncio.subprocess.Process, rate: int) -> None:
        self.proc = proc
        self.rate = rate
        self.data = bytearray()

    async def until_sound_then_quiet(
        self, *, quiet_ms: float = 400.0, level: float = 0.02
    ) -> AudioFrame:
        assert self.proc.stdout is not None
        block = 2 * self.rate // 100  # 10 ms of s16le mono
        heard, quiet = False, 0.0
        while True:
            chunk = await self.proc.stdout.readexactly(block)
            self.data += chunk
            loud = pcm(chunk, self.rate).rms() > level
            heard = heard or loud
            quiet = 0.0 if loud else quiet + 10.0
            if heard and quiet >= quiet_ms:
                return pcm(bytes(self.data), self.rate)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
        await self.proc.wait()


def start_pulse() -> Pulse:
    missing = [b for b in ("pulseaudio", "pactl", "paplay", "parec") if not shutil.which(b)]
    if missing:
        raise PulseUnavailable(
            f"missing {', '.join(missing)}: apt-get install pulseaudio pulseaudio-utils"
        )
    runtime = Path(tempfile.mkdtemp(prefix="duplex-pulse-"))
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    proc = subprocess.Popen(
        [
            "pulseaudio",
            "--daemonize=no",
            "--exit-idle-time=-1",
            "--system=false",
            "--disallow-exit",
            "-n",
            "--log-target=stderr",
            "--log-level=error",
            "--load=module-native-protocol-unix",
            "--load=module-null-sink sink_name=vsink rate=48000",
            "--load=module-null-sink sink_name=vmic rate=48000",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    pulse = Pulse(runtime, proc)
    deadline = time.monotonic() + 10
    # waiting on an external daemon's socket: there is no event to await across processes
    while True:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            shutil.rmtree(runtime, ignore_errors=True)
            raise PulseUnavailable(f"pulseaudio exited: {err.strip()[:300]}")
        try:
            pulse.pactl("info")
            break
        except subprocess.CalledProcessError:
            if time.monotonic() > deadline:
                pulse.stop()
                raise PulseUnavailable("pulseaudio did not come up within 10 s") from None
            time.sleep(0.05)
    pulse.pactl(
        "load-module",
        "module-remap-source",
        "master=vmic.monitor",
        "source_name=virtmic",
        "channels=1",
        "rate=48000",
    )
    pulse.pactl("set-default-source", "virtmic")
    pulse.pactl("set-default-sink", "vsink")
    return pulse


def pcm(data: bytes, rate: int) -> AudioFrame:
    return AudioFrame(np.frombuffer(data, dtype=np.int16).copy(), rate)
