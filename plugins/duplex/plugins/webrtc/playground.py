"""Running an app in the playground: one `AgentSession` per browser peer, served until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from typing import Any

from duplex.agents.app import AppSpec, default_vad
from duplex.agents.backend import Backend

from .server import ClosableSession, PlaygroundServer, SessionFactory
from .transport import WebRTCTransport

__all__ = ["app_factory", "default_vad", "serve"]

log = logging.getLogger(__name__)


def app_factory(spec: AppSpec, backend: Backend, **session_options: Any) -> SessionFactory:
    """A `SessionFactory` that runs ``spec`` on ``backend`` for each new peer."""

    async def start(transport: WebRTCTransport) -> ClosableSession:
        session = await spec.start(transport, backend, **session_options)
        return session

    return start


async def serve(
    spec: AppSpec,
    backend: Backend,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    backend_name: str | None = None,
    session_options: dict[str, Any] | None = None,
    on_ready: Callable[[PlaygroundServer], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve the playground until ``stop`` is set (or SIGINT/SIGTERM), then hang up cleanly."""
    options = dict(session_options or {})
    server = PlaygroundServer(
        app_factory(spec, backend, **options),
        host=host,
        port=port,
        info={"app": spec.name, "backend": backend_name or type(backend).__name__},
    )
    await backend.prewarm()
    await server.start()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        if on_ready is not None:
            on_ready(server)
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        await server.aclose()
        await backend.aclose()
