"""``agent sip``: the agent answers SIP calls itself, one session per call.

An INVITE to the agent's UDP port rings (180), the app's session starts, and
the call is answered (200 with the negotiated codec). With ``register`` the
agent's account registers with a PBX or trunk (digest auth), so calls to that
extension reach it. Malformed requests get PJSIP's SIP errors (400, 488...).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from duplex.agents.errors import ConfigurationError

from .sip_endpoint import Registration, SipEndpoint, pj
from .sip_transport import SipCall, SIPTransport

__all__ = ["SipServer", "SipSessionFactory"]

log = logging.getLogger(__name__)


class ClosableSession(Protocol):
    async def aclose(self) -> None: ...


SipSessionFactory = Callable[[SIPTransport], Awaitable[ClosableSession]]


@dataclass(eq=False)
class _Live:
    transport: SIPTransport
    session: ClosableSession | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)


class _Account(pj.Account):  # type: ignore[misc]
    """The agent's SIP account (PJSIP thread); owned by the server, dropped on that thread."""

    def __init__(self, server: SipServer) -> None:
        super().__init__()
        self.server = server

    def onIncomingCall(self, prm: Any) -> None:
        endpoint = self.server.endpoint
        transport = SIPTransport(endpoint, **self.server.transport_options)
        call = SipCall(self, prm.callId, transport)  # the endpoint owns it from here
        info = call.getInfo()
        transport.remote_uri = str(info.remoteUri)
        transport.call_id = str(info.callIdString)
        transport.call_key = call.key
        ringing = pj.CallOpParam(True)
        ringing.statusCode = 180
        call.answer(ringing)
        endpoint.to_loop(self.server._incoming, transport)

    def onRegState(self, prm: Any) -> None:
        self.server.endpoint.to_loop(self.server._on_reg_state, int(prm.code), str(prm.reason))


class SipServer:
    """Answers calls on ``host:port`` (UDP) for as long as it runs."""

    def __init__(
        self,
        factory: SipSessionFactory,
        *,
        host: str = "127.0.0.1",
        port: int = 5060,
        register: Registration | None = None,
        max_calls: int = 4,
        jitter_ms: tuple[int, int] = (40, 200),
        transport_options: dict[str, Any] | None = None,
    ) -> None:
        if max_calls < 1:
            raise ConfigurationError(f"max_calls must be at least 1, got {max_calls}")
        self.factory = factory
        self.endpoint = SipEndpoint(host=host, port=port, jitter_ms=jitter_ms)
        self.register = register
        self.max_calls = max_calls
        self.transport_options = dict(transport_options or {})
        self.calls: dict[str, _Live] = {}
        #: Every call's transport ever served (metrics and tests read finished ones).
        self.history: list[SIPTransport] = []
        #: Set once a REGISTER got 2xx; ``registration`` holds the last answer.
        self.registered = asyncio.Event()
        self.registration: tuple[int, str] | None = None
        self._reg_answered = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._account: _Account | None = None

    @property
    def host(self) -> str:
        return self.endpoint.host

    @property
    def port(self) -> int:
        return self.endpoint.port

    @property
    def uri(self) -> str:
        return f"sip:agent@{self.host}:{self.port}"

    async def start(self) -> str:
        await self.endpoint.start()
        capacity = self.endpoint.call_capacity
        if self.max_calls > capacity:
            await self.endpoint.aclose()
            raise ConfigurationError(
                f"this PJSIP build holds at most {capacity} calls at once "
                f"(PJSUA_MAX_CALLS); max_calls={self.max_calls} is more"
            )
        await self.endpoint.run(self._create_account)
        return self.uri

    def _create_account(self) -> None:
        cfg = pj.AccountConfig()
        reg = self.register
        if reg is None:
            cfg.idUri = self.uri
        else:
            cfg.idUri = f"sip:{reg.user}@{reg.domain}"
            cfg.regConfig.registrarUri = reg.registrar or f"sip:{reg.domain}"
            if reg.password is not None:
                cfg.sipConfig.authCreds.append(
                    pj.AuthCredInfo("digest", "*", reg.user, 0, reg.password)
                )
        if self.host not in ("0.0.0.0", "::"):
            cfg.mediaConfig.transportConfig.boundAddress = self.host
            cfg.mediaConfig.transportConfig.publicAddress = self.host
        account = _Account(self)
        account.create(cfg, True)
        self._account = account

    def _drop_account(self) -> None:
        """On the PJSIP thread: un-REGISTER and free the account there."""
        account, self._account = self._account, None
        if account is not None:
            try:
                account.shutdown()
            except Exception as e:
                log.debug("account shutdown: %s", e)

    async def aclose(self) -> None:
        """Hang up every call (BYE), unregister, stop PJSIP."""
        lives = list(self.calls.values())
        await asyncio.gather(*(live.transport.aclose("server_closed") for live in lives))
        for live in lives:
            await asyncio.gather(*live.tasks, return_exceptions=True)
        try:
            await self.endpoint.run(self._drop_account)
        except Exception as e:  # PJSIP already stopped
            log.debug("account shutdown: %s", e)
        await self.endpoint.aclose()

    async def wait_idle(self) -> None:
        """Until no call is live."""
        await self._idle.wait()

    # --- calls (on the loop) ----------------------------------------------------------------
    def _incoming(self, transport: SIPTransport) -> None:
        self.history.append(transport)
        live = _Live(transport)
        if len(self.calls) >= self.max_calls:
            log.warning("busy: refusing a call from %s", transport.remote_uri)
            live.tasks.add(asyncio.get_running_loop().create_task(self._refuse(transport, 486)))
            return
        self.calls[transport.call_id] = live
        self._idle.clear()
        live.tasks.add(asyncio.get_running_loop().create_task(self._run(live)))

    async def _refuse(self, transport: SIPTransport, code: int) -> None:
        def refuse(call: Any) -> None:
            op = pj.CallOpParam(True)
            op.statusCode = code
            call.hangup(op)

        try:
            await self.endpoint.with_call(transport.call_key, refuse)
        except Exception as e:  # the caller gave up meanwhile
            log.debug("refusing %s: %s", transport.remote_uri, e)
        await transport._finish()

    async def _run(self, live: _Live) -> None:
        transport = live.transport
        try:
            try:
                live.session = await self.factory(transport)
            except Exception:
                log.exception("the agent failed to start for %s", transport.remote_uri)
                await self._refuse(transport, 500)
                return
            if not transport.closed.is_set():

                def answer(call: Any) -> None:
                    op = pj.CallOpParam(True)
                    op.statusCode = 200
                    call.answer(op)

                try:
                    await self.endpoint.with_call(transport.call_key, answer)
                except Exception as e:  # PJSIP refused: the INVITE is gone
                    log.warning("could not answer %s: %s", transport.remote_uri, e)
                    await transport.aclose("answer_failed")
            log.info("SIP call from %s answered", transport.remote_uri)
            await transport.closed.wait()
            try:
                await live.session.aclose()
            except Exception:
                log.exception("closing the session of %s failed", transport.remote_uri)
            log.info("SIP call from %s ended (%s)", transport.remote_uri, transport.close_reason)
        finally:
            self.calls.pop(transport.call_id, None)
            if not self.calls:
                self._idle.set()

    async def wait_registration(self) -> tuple[int, str]:
        """The registrar's final answer to the REGISTER (after any digest challenge)."""
        await self._reg_answered.wait()
        assert self.registration is not None
        return self.registration

    def _on_reg_state(self, code: int, reason: str) -> None:
        self.registration = (code, reason)
        if code not in (401, 407):  # a challenge is answered by PJSIP itself
            self._reg_answered.set()
        if 200 <= code < 300:
            self.registered.set()
            log.info("registered (%d %s)", code, reason)
        else:
            self.registered.clear()
            log.warning("registration: %d %s", code, reason)
