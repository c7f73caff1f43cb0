"""The agent's SIP server on a free 127.0.0.1 port, with sessions the tests can reach."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from duplex.agents import Agent, AgentSession
from duplex.agents.backend import Backend

from .baresip import free_udp_port
from .conftest import TURN, Caller


@dataclass
class SipHarness:
    server: Any
    sessions: list[AgentSession] = field(default_factory=list)
    started: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)

    async def next_call(self, timeout: float = 20.0) -> tuple[Any, AgentSession]:
        transport = await asyncio.wait_for(self.started.get(), timeout)
        return transport, self.sessions[-1]


@asynccontextmanager
async def sip_harness(
    backend_factory: Callable[[], Backend],
    *,
    agent_factory: Callable[[Any], Agent] = lambda t: Caller(),
    **server_options: Any,
) -> AsyncIterator[SipHarness]:
    from duplex.plugins.telephony.sip_server import SipServer
    from duplex.plugins.webrtcvad import WebRTCVAD

    backends: list[Backend] = []
    harness: SipHarness

    async def factory(transport: Any) -> AgentSession:
        backend = backend_factory()
        backends.append(backend)
        session = AgentSession(
            agent=agent_factory(transport), backend=backend, vad=WebRTCVAD(mode=2), turn=TURN
        )
        await session.start(transport)
        harness.sessions.append(session)
        harness.started.put_nowait(transport)
        return session

    server = SipServer(factory, port=free_udp_port(), **server_options)
    harness = SipHarness(server)
    await server.start()
    try:
        yield harness
    finally:
        await server.aclose()
        for backend in backends:
            await backend.aclose()
