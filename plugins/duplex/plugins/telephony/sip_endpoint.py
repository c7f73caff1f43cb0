"""PJSIP (``pjsua2``) on a thread of its own, for SIP calls answered by the agent.

PJSIP does the SIP and RTP work: codec negotiation (PCMU, PCMA, G.722,
Speex, GSM, iLBC in the ``pjsua2-python`` build), its adaptive jitter buffer,
RFC 4733 and SIP INFO DTMF, BYE, REFER and digest-authenticated REGISTER.
It is not asyncio: every pjsua2 call here runs on one worker thread that
also polls PJSIP's events, and what PJSIP reports is handed to the asyncio
loop with ``call_soon_threadsafe``. Audio frames cross over in
`sip_transport` through thread-safe buffers.

There is one PJSIP library per process, so one `SipEndpoint` per process.

Object lifetimes follow pjsua2's rules, because breaking them crashes the
process some time later rather than raising:

* pjsua2 objects (calls, the account, media ports) are created, used and
  released on the PJSIP thread only, and only the endpoint (or an object it
  owns) refers to them, so reference counting frees them there and never the
  cyclic GC on another thread. The asyncio side holds a call's *key*.
* A call stays registered until PJSIP delivers its DISCONNECTED state and is
  released in that callback, before its call id can be reused (`forget`).
* Media ports are pooled and outlive the library (`sip_media`).
* ``libDestroy`` runs after every call is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import itertools
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from duplex.agents.errors import ConfigurationError, DuplexError

try:
    import pjsua2 as pj
except ImportError as e:  # pragma: no cover - the `sip` extra
    raise ImportError(
        "direct SIP needs pjsua2: pip install 'duplex-agents[sip]' (Python 3.12 or older)"
    ) from e

__all__ = ["Registration", "SipEndpoint", "SipEndpointError", "pj"]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Codec preference: wideband first where the phone has it, then G.711 (what trunks offer).
CODEC_PRIORITY = {"G722/16000/1": 250, "PCMU/8000/1": 240, "PCMA/8000/1": 230}
#: The conference bridge's rate: G.722's, so wideband calls are not narrowed.
BRIDGE_RATE = 16000
#: Asked of PJSIP; it silently caps this at its build's PJSUA_MAX_CALLS (4 in pjsua2-python).
_CALLS_WANTED = 64


class SipEndpointError(DuplexError):
    """PJSIP refused to start or to act (port in use, bad URI, no call)."""


@dataclass(frozen=True)
class Registration:
    """``--register user@pbx``: register the agent's account with a PBX or trunk."""

    user: str
    domain: str
    password: str | None = None
    #: ``sip:pbx.example.com`` unless given.
    registrar: str | None = None

    @classmethod
    def parse(cls, text: str, password: str | None = None) -> Registration:
        target = text.removeprefix("sip:")
        if "@" not in target:
            raise ConfigurationError(f"--register wants user@pbx, got {text!r}")
        user, domain = target.split("@", 1)
        if not user or not domain:
            raise ConfigurationError(f"--register wants user@pbx, got {text!r}")
        return cls(user, domain, password)


_PJ_LEVELS = {0: logging.CRITICAL, 1: logging.ERROR, 2: logging.WARNING, 3: logging.INFO}


class _LogWriter(pj.LogWriter):  # type: ignore[misc]
    """PJSIP's log lines into the ``logging`` module (PJSIP level 1 = error ... 5 = trace)."""

    def write(self, entry: Any) -> None:
        pjsip_log.log(_PJ_LEVELS.get(int(entry.level), logging.DEBUG), "%s", entry.msg.rstrip())


pjsip_log = logging.getLogger("duplex.plugins.telephony.pjsip")


class SipEndpoint:
    """Owns the PJSIP library and its thread; `run` executes a function on that thread."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 5060,
        jitter_ms: tuple[int, int] = (40, 200),
        log_level: int = 1,
    ) -> None:
        from .sip_media import PortPool  # it builds on this module's `pj`

        self.host = host
        self.port = port
        self.jitter_ms = jitter_ms
        self.log_level = log_level
        #: Calls PJSIP can hold at once (its build's call table), known once started.
        self.call_capacity = 0
        self.ep: Any = None
        #: Media ports, reused from call to call (PJSIP thread only).
        self.ports = PortPool()
        self._calls: dict[int, Any] = {}  # key -> pj.Call; PJSIP thread only
        self._keys = itertools.count(1)
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._started: Future[None] = Future()
        self._stopping = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._main, name="duplex-sip", daemon=True)
        self._thread.start()
        await asyncio.wrap_future(self._started)

    async def aclose(self) -> None:
        if self._thread is None:
            return
        self._stopping.set()
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join, 10.0)
        self._thread = None

    # --- running things on the PJSIP thread -------------------------------------------------
    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the PJSIP thread; its result or exception comes back here."""
        fut: Future[T] = Future()

        def job() -> None:
            if not fut.set_running_or_notify_cancel():
                return
            try:
                fut.set_result(fn())
            except BaseException as e:  # handed back to the awaiting coroutine
                fut.set_exception(e)

        if self._thread is None or self._stopping.is_set():
            raise SipEndpointError("the SIP endpoint is not running")
        self._jobs.put(job)
        return await asyncio.wrap_future(fut)

    def post(self, fn: Callable[[], None]) -> None:
        """Queue ``fn`` for the PJSIP thread without waiting (from any thread)."""
        self._jobs.put(fn)

    def to_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        """From the PJSIP (or media) thread: run ``fn(*args)`` on the asyncio loop."""
        loop = self.loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(fn, *args)

    @property
    def on_thread(self) -> bool:
        return threading.current_thread() is self._thread

    # --- calls (keys for the asyncio side, objects for the PJSIP thread) --------------------
    def adopt(self, call: Any) -> int:
        """Own ``call`` until its DISCONNECTED state was delivered; returns its key."""
        key = next(self._keys)
        self._calls[key] = call
        return key

    def forget(self, key: int) -> None:
        """From the call's DISCONNECTED callback: drop the endpoint's reference.

        This is pjsua2's documented moment to delete a call. The object is freed when
        that callback returns (or, if a job of ours caused the disconnect, when that job
        does): on this thread, and before PJSIP reads another INVITE. Later would be
        wrong: the next call may take the same call id, and pjsua2's ``~Call`` clears the
        callbacks of whatever call holds its id (that call then never hears its BYE).
        """
        self._calls.pop(key, None)

    @property
    def live_calls(self) -> int:
        """Calls PJSIP still holds objects for."""
        return len(self._calls)

    async def with_call(self, key: int | None, fn: Callable[[Any], T]) -> T | None:
        """``fn(call)`` on the PJSIP thread while the call is up; None once it is over."""

        def job() -> T | None:
            call = self._calls.get(key) if key is not None else None
            if call is None or getattr(call, "disconnected", False):
                return None
            return fn(call)

        return await self.run(job)

    # --- the thread ---------------------------------------------------------------------------
    def _main(self) -> None:
        try:
            self._create()
        except BaseException as e:
            self._started.set_exception(
                SipEndpointError(f"could not start SIP on {self.host}:{self.port}: {e}")
            )
            with contextlib.suppress(Exception):
                self.ep.libDestroy()
            return
        self._started.set_result(None)
        try:
            while not self._stopping.is_set():
                self.ep.libHandleEvents(5)
                self._drain_jobs()
        finally:
            self._shut_down()

    def _shut_down(self) -> None:
        """Hang up, let the DISCONNECTED states arrive, free the calls, then the library."""
        self._drain_jobs()
        with contextlib.suppress(Exception):
            self.ep.hangupAllCalls()
        for _ in range(50):
            if not self._calls:
                break
            with contextlib.suppress(Exception):
                self.ep.libHandleEvents(10)
            self._drain_jobs()
        if self._calls:
            log.warning("%d SIP call(s) never reported DISCONNECTED", len(self._calls))
            self._calls.clear()  # ~Call hangs up what is still active
        gc.collect()  # pjsua2 objects in unreachable cycles die here, while PJSIP lives
        self.ep.libDestroy()
        self.ports.outlive_library()
        self.ep = None

    def _drain_jobs(self) -> None:
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is None:
                self._stopping.set()
                continue
            try:
                job()
            except Exception:
                log.exception("a SIP job failed")

    def _create(self) -> None:
        ep = pj.Endpoint()
        self.ep = ep
        ep.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0  # we poll from this thread
        cfg.uaConfig.mainThreadOnly = False
        cfg.uaConfig.maxCalls = _CALLS_WANTED
        cfg.uaConfig.userAgent = "duplex-agents"
        cfg.logConfig.level = self.log_level
        cfg.logConfig.consoleLevel = self.log_level
        cfg.logConfig.decor = 0  # the logging module adds time and source
        self._log_writer = _LogWriter()
        cfg.logConfig.writer = self._log_writer
        cfg.medConfig.clockRate = BRIDGE_RATE
        cfg.medConfig.sndClockRate = BRIDGE_RATE
        cfg.medConfig.noVad = True  # the agent decides what is speech, not the codec
        cfg.medConfig.ecTailLen = 0
        cfg.medConfig.jbMinPre, cfg.medConfig.jbMaxPre = self.jitter_ms[0], self.jitter_ms[1]
        cfg.medConfig.jbMax = self.jitter_ms[1] * 2
        ep.libInit(cfg)
        self.call_capacity = _call_capacity()
        tc = pj.TransportConfig()
        tc.port = self.port
        tc.boundAddress = self.host
        tc.publicAddress = self.host
        ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tc)
        ep.libStart()
        ep.audDevManager().setNullDev()  # no sound card: the bridge runs on its own clock
        for codec in ep.codecEnum2():
            ep.codecSetPriority(codec.codecId, CODEC_PRIORITY.get(codec.codecId, 0))
        if self.port == 0:
            info = ep.transportGetInfo(0)
            self.port = int(str(info.localName).rsplit(":", 1)[1])

    def codecs(self) -> list[str]:
        """Enabled codecs, best first (on the PJSIP thread)."""
        found = [(c.priority, c.codecId) for c in self.ep.codecEnum2() if c.priority > 0]
        return [name for _, name in sorted(found, reverse=True)]


def _call_capacity() -> int:
    """PJSIP's call table size after ``libInit`` (pjsua2 has no call for it; pjsua has)."""
    try:
        lib = ctypes.CDLL(pj._pjsua2.__file__)  # the loaded extension: same handle
        return int(lib.pjsua_call_get_max_count())
    except (AttributeError, OSError) as e:
        log.warning("could not read PJSIP's call table size (%s); assuming 4", e)
        return 4
