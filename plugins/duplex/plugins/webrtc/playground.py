"""Running an app in the playground: one `AgentSession` per browser peer, served until stopped."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from duplex.agents.app import AppSpec, Prepare
from duplex.agents.app import default_vad as _default_vad
from duplex.agents.backend import Backend
from duplex.agents.recorder import SessionRecorder
from duplex.agents.serving import serve_until_stopped
from duplex.agents.session import AgentSession
from duplex.agents.transport import Transport

from .server import ClosableSession, PlaygroundServer, SessionFactory
from .transport import WebRTCTransport

__all__ = ["app_factory", "default_vad", "describe_backend", "serve"]

default_vad = _default_vad  # kept for callers that imported it from here

log = logging.getLogger(__name__)


_LABELS = {"WhisperSTT": "Whisper", "EchoLLM": "echo", "PiperTTS": "Piper"}
_LABELS["ChatCompletionsLLM"] = ""  # its model name says it


def _stage_label(stage: object) -> str:
    name = type(stage).__name__
    label = _LABELS.get(name, name)
    if name == "WhisperSTT":  # its `model` is the loaded model (not loaded yet here)
        path = getattr(stage, "model_path", None)
        model: object = Path(path).name if path else "tiny.en"  # the extra's bundled model
    else:
        model = getattr(stage, "model", None)
    if not isinstance(model, str) or not model:
        return label
    return f"{label} {model}".strip()


def describe_backend(backend: Backend) -> str:
    """What the page says the agent is made of, e.g. ``Whisper tiny.en → echo → Piper``."""
    stages = [getattr(backend, n, None) for n in ("stt", "llm", "tts")]
    if all(s is not None for s in stages):
        return " → ".join(_stage_label(s) for s in stages)
    model = getattr(backend, "model", None)
    name = type(backend).__name__
    return f"{name} ({model})" if isinstance(model, str) else name


def app_factory(
    spec: AppSpec,
    backend: Backend,
    *,
    record_dir: str | Path | None = None,
    on_recorded: Callable[[Path, Path], None] | None = None,
    prepare: Sequence[Prepare] = (),
    **session_options: Any,
) -> SessionFactory:
    """A `SessionFactory` that runs ``spec`` on ``backend`` for each new peer.

    With ``record_dir`` every call is saved there by a `SessionRecorder` when it ends
    (``on_recorded(json_path, wav_path)`` is told). ``prepare`` hooks (e.g.
    `SessionTelemetry.prepare`) see each session before it starts.
    """

    def prepare_all(session: AgentSession, transport: Transport) -> None:
        if record_dir is not None:
            SessionRecorder(record_dir, on_saved=on_recorded).attach(session, transport)
        for hook in prepare:
            hook(session, transport)

    async def start(transport: WebRTCTransport) -> ClosableSession:
        session = await spec.start(transport, backend, prepare=prepare_all, **session_options)
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
    record_dir: str | Path | None = None,
    prepare: Sequence[Prepare] = (),
    on_ready: Callable[[PlaygroundServer], None] | None = None,
    stop: asyncio.Event | None = None,
    server_options: dict[str, Any] | None = None,
    drain_timeout: float | None = None,
) -> None:
    """Serve the playground until ``stop`` is set (or SIGINT/SIGTERM), then hang up cleanly.

    With ``drain_timeout`` (a worker among several), SIGTERM first drains: no new
    calls, those in progress finish (for up to that many seconds).
    """
    options = dict(session_options or {})
    server = PlaygroundServer(
        app_factory(spec, backend, record_dir=record_dir, prepare=prepare, **options),
        host=host,
        port=port,
        info={
            "app": spec.name,
            "backend": backend_name or type(backend).__name__,
            "parts": describe_backend(backend),
        },
        **(server_options or {}),
    )
    await serve_until_stopped(
        server, backend, on_ready=on_ready, stop=stop, drain_timeout=drain_timeout
    )
