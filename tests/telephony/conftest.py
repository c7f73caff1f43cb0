"""Fixtures for the phone tests: a fake provider, the phone server wired to it, Whisper."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from duplex.agents import Agent, AgentSession, TurnOptions
from duplex.agents.backend import Backend
from duplex.plugins.telephony import (
    MediaStreamTransport,
    PhoneServer,
    TelnyxCallControl,
    TwilioCallControl,
)
from tests.hearing import whisper_transcriber

from .fake_api import FakeProvider
from .provider import TELNYX_KEY, TWILIO_ACCOUNT, TWILIO_TOKEN

TURN = TurnOptions(prefix_padding_ms=200, silence_duration_ms=400, min_speech_ms=100)


class Caller(Agent):
    instructions = "You answer phone calls."


@dataclass
class PhoneHarness:
    provider: FakeProvider
    server: PhoneServer
    sessions: list[AgentSession] = field(default_factory=list)
    transports: list[MediaStreamTransport] = field(default_factory=list)
    started: asyncio.Queue[MediaStreamTransport] = field(default_factory=asyncio.Queue)

    async def call(self, **kwargs: Any) -> tuple[Any, MediaStreamTransport, AgentSession]:
        """Place a call and wait until its session runs."""
        phone = await self.provider.call(self.server.url, **kwargs)
        transport = await asyncio.wait_for(self.started.get(), 20)
        return phone, transport, self.sessions[self.transports.index(transport)]


def telnyx_keys() -> tuple[Any, str]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return key, base64.b64encode(public).decode()


def telnyx_signer(key: Any) -> Callable[[bytes], dict[str, str]]:
    def sign(body: bytes) -> dict[str, str]:
        ts = str(int(time.time()))
        sig = key.sign(ts.encode() + b"|" + body)
        return {"telnyx-signature-ed25519": base64.b64encode(sig).decode(), "telnyx-timestamp": ts}

    return sign


@asynccontextmanager
async def phone_harness(
    provider: str,
    backend_factory: Callable[[], Backend],
    *,
    agent_factory: Callable[[MediaStreamTransport], Agent] = lambda t: Caller(),
    vad: Callable[[], Any] | None = None,
    secured: bool = True,
    **server_options: Any,
) -> AsyncIterator[PhoneHarness]:
    fake = await FakeProvider(provider).start()
    control = (
        TwilioCallControl(TWILIO_ACCOUNT, TWILIO_TOKEN, base_url=fake.url)
        if provider == "twilio"
        else TelnyxCallControl(TELNYX_KEY, base_url=fake.url)
    )
    key, public = telnyx_keys()
    if secured:
        fake.telnyx_signer = telnyx_signer(key)
    backends: list[Backend] = []
    harness: PhoneHarness

    async def factory(transport: MediaStreamTransport) -> AgentSession:
        backend = backend_factory()
        backends.append(backend)
        if vad is None:
            from duplex.plugins.webrtcvad import WebRTCVAD

            chosen: Any = WebRTCVAD(mode=2)
        else:
            chosen = vad()
        session = AgentSession(
            agent=agent_factory(transport), backend=backend, vad=chosen, turn=TURN
        )
        harness.sessions.append(session)
        harness.transports.append(transport)
        await session.start(transport)
        harness.started.put_nowait(transport)
        return session

    server = PhoneServer(
        factory,
        provider=provider,
        port=0,
        control=control,
        twilio_auth_token=TWILIO_TOKEN if secured and provider == "twilio" else None,
        telnyx_public_key=public if secured and provider == "telnyx" else None,
        **server_options,
    )
    harness = PhoneHarness(fake, server)
    await server.start()
    try:
        yield harness
    finally:
        await server.aclose()
        await fake.stop()
        for backend in backends:
            await backend.aclose()


@pytest.fixture(scope="session")
def whisper() -> Iterator[Callable[[np.ndarray, int], str]]:
    """Transcribes audio (int16 mono at any rate) with the Whisper tiny.en in the wheel."""
    yield whisper_transcriber()


Waiter = Callable[[], Awaitable[None]]
