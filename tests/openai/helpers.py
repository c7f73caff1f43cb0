"""Drive an `OpenAIRealtimeSession` directly: collect its events, mirror them into a
`Conversation` the way `AgentSession` applies them, and feed it caller audio."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

from duplex.agents.audio import AudioFrame
from duplex.agents.backend import BackendEvent, ItemAdded, ItemDeleted, ItemUpdated
from duplex.agents.conversation import Conversation
from duplex.backends.openai import OpenAIRealtime, OpenAIRealtimeSession

from ..speech import concat, silence, speak, split
from .server import API_KEY, RealtimeTestServer

E = TypeVar("E")


def backend(server: RealtimeTestServer, **options: Any) -> OpenAIRealtime:
    options.setdefault("reconnect", None)
    return OpenAIRealtime(base_url=server.base_url, api_key=API_KEY, env={}, **options)


class Collector:
    """Consumes a session's events; applies item events to ``conversation`` verbatim."""

    def __init__(self, session: OpenAIRealtimeSession, conversation: Conversation | None = None):
        self.session = session
        self.conversation = conversation if conversation is not None else Conversation()
        self.events: list[BackendEvent] = []
        self._changed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        async for ev in self.session.events():
            if isinstance(ev, (ItemAdded, ItemUpdated, ItemDeleted)):
                self.conversation.apply(ev)  # as AgentSession does
            self.events.append(ev)
            self._changed.set()
            self._changed = asyncio.Event()

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]

    async def wait_for(
        self, kind: type[E], predicate: Callable[[E], bool] | None = None, timeout: float = 5.0
    ) -> E:
        async def _wait() -> E:
            seen = 0
            while True:
                for ev in self.events[seen:]:
                    if isinstance(ev, kind) and (predicate is None or predicate(ev)):
                        return ev
                seen = len(self.events)
                await self._changed.wait()

        return await asyncio.wait_for(_wait(), timeout)

    async def count(self, kind: type[Any], n: int, timeout: float = 5.0) -> None:
        async def _wait() -> None:
            while len(self.of(kind)) < n:
                await self._changed.wait()

        await asyncio.wait_for(_wait(), timeout)

    async def aclose(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def utterance(text: str = "what is the weather in paris", rate: int = 24000) -> AudioFrame:
    """Real synthetic speech with silence either side, long enough to end a VAD turn."""
    return concat(silence(0.3, rate), speak(text, rate), silence(0.8, rate))


async def say(session: OpenAIRealtimeSession, audio: AudioFrame, frame_ms: float = 20.0) -> None:
    """Push audio the way a transport delivers it (20 ms frames), as fast as accepted."""
    for frame in split(audio, frame_ms):
        await session.push_audio(frame)


def ids(items: Any) -> list[str]:
    return [it["id"] if isinstance(it, dict) else it.id for it in items]
