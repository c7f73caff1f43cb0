"""PJSIP media ports that carry a call's audio to and from Python, and their pool.

A `MediaPort` sits in PJSIP's conference bridge; the bridge's clock thread asks
it for the agent's next 20 ms (``onFrameRequested``) and hands it the caller's
(``onFrameReceived``). Each port feeds whichever `FrameSink` (a call's
transport) is attached to it.

Why a pool: pjsua2 removes a port from the bridge *asynchronously* — its
destructor only queues the removal, which the clock thread performs on its
next tick, while the destructor goes on to free the port's memory at once. A
port deleted while the bridge runs is therefore touched after it was freed (a
segfault under load). The pjsua2 Python API offers no way to remove a port and
wait for it, so ports are never deleted while PJSIP lives: a finished call's
port is detached and reused by the next call, and when the library is
destroyed (which removes every port while they are still alive) the ports'
C++ halves are disowned and never freed: their destructors would call into the
destroyed library. Their number is the most calls that were ever up at once.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any, Protocol

from .sip_endpoint import BRIDGE_RATE, pj

__all__ = ["FRAME_BYTES", "FRAME_MS", "FrameSink", "MediaPort", "PortPool", "vector_bytes"]

log = logging.getLogger(__name__)

FRAME_MS = 20
FRAME_SAMPLES = BRIDGE_RATE * FRAME_MS // 1000
FRAME_BYTES = FRAME_SAMPLES * 2
_SILENCE = bytes(FRAME_BYTES)


class FrameSink(Protocol):
    """What a port feeds; both run on PJSIP's media clock thread."""

    def pull_frame(self) -> bytes:
        """The agent's next frame: ``FRAME_BYTES`` of 16-bit PCM at the bridge rate."""
        ...

    def push_frame(self, pcm: bytes) -> None:
        """A frame of the caller's audio (16-bit PCM at the bridge rate)."""
        ...


def _vector_bytes_slow(vec: Any) -> bytes:
    return bytes(vec)


def _vector_bytes_fast(vec: Any) -> bytes:
    """A ``std::vector<unsigned char>`` (SWIG ``ByteVector``) as bytes, without a Python loop.

    SWIG's element-wise conversion costs ~1 ms per 20 ms frame; libstdc++ keeps the
    data pointer first in the vector, so one ``string_at`` copies it. `vector_bytes`
    is checked against the slow path once before it is trusted.
    """
    begin = ctypes.c_void_p.from_address(int(vec.this)).value
    return ctypes.string_at(begin, vec.size()) if begin else b""


def _pick_vector_reader() -> Any:
    probe = pj.ByteVector(bytes(range(256)))
    try:
        if _vector_bytes_fast(probe) == _vector_bytes_slow(probe):
            return _vector_bytes_fast
    except (ValueError, TypeError, OSError):
        pass
    log.warning("reading PJSIP frames the slow way (unexpected vector layout)")
    return _vector_bytes_slow


vector_bytes = _pick_vector_reader()


class MediaPort(pj.AudioMediaPort):  # type: ignore[misc]
    """One conference-bridge port; silent and deaf while no sink is attached."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.sink: FrameSink | None = None
        fmt = pj.MediaFormatAudio()
        fmt.init(pj.PJMEDIA_FORMAT_PCM, BRIDGE_RATE, 1, FRAME_MS * 1000, 16)
        self.createPort(name, fmt)

    def onFrameRequested(self, frame: Any) -> None:
        sink = self.sink  # one read: the PJSIP thread may detach it meanwhile
        pcm = sink.pull_frame() if sink is not None else _SILENCE
        frame.type = pj.PJMEDIA_FRAME_TYPE_AUDIO
        frame.buf = pj.ByteVector(pcm)
        frame.size = len(pcm)

    def onFrameReceived(self, frame: Any) -> None:
        sink = self.sink
        if sink is None or frame.type != pj.PJMEDIA_FRAME_TYPE_AUDIO or frame.size <= 0:
            return
        pcm = vector_bytes(frame.buf)
        if len(pcm) >= 2:
            sink.push_frame(pcm)


class PortPool:
    """The endpoint's media ports. Used on the PJSIP thread only."""

    def __init__(self) -> None:
        self._free: list[MediaPort] = []
        self._all: list[MediaPort] = []

    @property
    def size(self) -> int:
        """Ports created so far (the most calls up at once)."""
        return len(self._all)

    @property
    def idle(self) -> int:
        return len(self._free)

    def acquire(self, sink: FrameSink) -> MediaPort:
        """A port in the bridge, feeding ``sink``."""
        if self._free:
            port = self._free.pop()
        else:
            port = MediaPort(f"duplex-{len(self._all)}")
            self._all.append(port)
        port.sink = sink
        return port

    def release(self, port: MediaPort) -> None:
        """Detach ``port`` (its call ended; the bridge already unlinked the call's side)."""
        port.sink = None
        if port not in self._free:
            self._free.append(port)

    def outlive_library(self) -> None:
        """After ``libDestroy``: let the Python side go, never the C++ side (its destructor
        would queue a removal on the destroyed bridge and release a destroyed pool)."""
        for port in self._all:
            port.sink = None
            port.thisown = False
        self._all.clear()
        self._free.clear()
