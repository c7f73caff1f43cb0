"""baresip as the phone: it calls the agent, plays a WAV as its microphone, records what it hears.

Driven over its ``ctrl_tcp`` module (netstring-framed JSON commands and
events) on 127.0.0.1. The ``sndfile`` module writes what baresip decoded from
the agent to ``<dir>/rec/dump-*-dec.wav``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import tempfile
import wave
from pathlib import Path
from typing import Any

import numpy as np

from duplex.agents.audio import AudioFrame
from duplex.agents.testing import write_wav

BARESIP = "baresip"


def baresip_available() -> bool:
    return shutil.which(BARESIP) is not None


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_sip_port() -> int:
    """A port baresip can take whole: UDP and TCP on it, and TCP on the next (its SIP/TLS)."""
    for _ in range(50):
        port = free_udp_port()
        socks: list[socket.socket] = []
        try:
            for kind, p in ((socket.SOCK_STREAM, port), (socket.SOCK_STREAM, port + 1)):
                sock = socket.socket(socket.AF_INET, kind)
                socks.append(sock)
                sock.bind(("127.0.0.1", p))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        return port
    raise RuntimeError("no free port for baresip")


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _netstring(data: bytes) -> bytes:
    return str(len(data)).encode() + b":" + data + b","


class Baresip:
    """One baresip process with its own config directory."""

    def __init__(
        self,
        microphone: AudioFrame,
        *,
        codecs: tuple[str, ...] = ("g711",),
        account_params: str = "",
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="duplex-baresip-"))
        self.sip_port = free_sip_port()
        self.ctrl_port = free_tcp_port()
        mic = self.dir / "mic.wav"
        write_wav(mic, microphone)
        (self.dir / "rec").mkdir()
        modules = "\n".join(f"module {c}.so" for c in codecs)
        (self.dir / "config").write_text(
            f"""sip_listen 127.0.0.1:{self.sip_port}
audio_source aufile,{mic}
audio_alert aufile,{mic}
audio_player aufile,{self.dir / "unused.wav"}
module_path /usr/lib/baresip/modules
module_app account.so
module_app menu.so
module_app ctrl_tcp.so
ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}
{modules}
module aufile.so
module sndfile.so
snd_path {self.dir / "rec"}
"""
        )
        (self.dir / "accounts").write_text(f"<sip:phone@127.0.0.1>;regint=0{account_params}\n")
        self.proc: asyncio.subprocess.Process | None = None
        self.events: list[dict[str, Any]] = []
        self._event = asyncio.Condition()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self.log = b""

    async def start(self) -> Baresip:
        self.proc = await asyncio.create_subprocess_exec(
            BARESIP,
            "-f",
            str(self.dir),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._log_task = asyncio.create_task(self._read_log())
        for _ in range(200):
            try:
                self._reader, self._writer = await asyncio.open_connection(
                    "127.0.0.1", self.ctrl_port
                )
                break
            except OSError:
                await asyncio.sleep(0.05)
        else:
            raise RuntimeError(f"baresip did not start: {self.log.decode(errors='replace')}")
        self._task = asyncio.create_task(self._read_events())
        return self

    async def _read_log(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.log += line

    async def _read_events(self) -> None:
        assert self._reader is not None
        while True:
            try:
                size = await self._reader.readuntil(b":")
                body = await self._reader.readexactly(int(size[:-1]) + 1)
            except (asyncio.IncompleteReadError, ValueError, ConnectionError):
                return
            msg = json.loads(body[:-1])
            async with self._event:
                self.events.append(msg)
                self._event.notify_all()

    async def command(self, command: str, params: str = "") -> None:
        assert self._writer is not None
        payload = json.dumps({"command": command, "params": params, "token": command})
        self._writer.write(_netstring(payload.encode()))
        await self._writer.drain()

    async def wait_event(self, kind: str, timeout: float = 20.0) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            return next((e for e in self.events if e.get("type") == kind), None)

        async def wait() -> dict[str, Any]:
            async with self._event:
                await self._event.wait_for(lambda: find() is not None)
            found = find()
            assert found is not None
            return found

        return await asyncio.wait_for(wait(), timeout)

    async def dial(self, uri: str) -> None:
        await self.command("dial", uri)

    def heard(self) -> AudioFrame | None:
        """What baresip decoded from the agent (its ``sndfile`` dump)."""
        dumps = sorted((self.dir / "rec").glob("*-dec.wav"))
        if not dumps:
            return None
        with wave.open(str(dumps[-1]), "rb") as w:
            rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return AudioFrame(pcm.reshape(-1, 1).copy(), rate, 1)

    async def aclose(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self.command("quit")
            self._writer.close()
        if self.proc is not None and self.proc.returncode is None:
            try:
                await asyncio.wait_for(self.proc.wait(), 1)
            except asyncio.TimeoutError:
                self.proc.terminate()
                try:
                    await asyncio.wait_for(self.proc.wait(), 2)
                except asyncio.TimeoutError:
                    self.proc.kill()
                    await self.proc.wait()
        for task in (self._task, getattr(self, "_log_task", None)):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        shutil.rmtree(self.dir, ignore_errors=True)
