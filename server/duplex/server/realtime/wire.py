"""Server events out: names per dialect, event ids, and one bounded queue per connection.

A client that stops reading fills its queue; the connection is then closed instead of
buffering without end (``slow_client``), so one stuck client costs bounded memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .errors import ProtocolError
from .protocol import Dialect

logger = logging.getLogger(__name__)

#: GA name -> beta name, for the events whose names changed at GA.
_BETA_NAMES = {
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
}

#: Sees every event as sent (tests validate each one against the SDK's unions).
EventHook = Callable[[Dialect, dict[str, Any]], None]


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


class Wire:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        dialect: Dialect,
        *,
        queue_size: int = 2048,
        hook: EventHook | None = None,
    ) -> None:
        self.ws = ws
        self.dialect = dialect
        self._queue: asyncio.Queue[str | None] = asyncio.Queue(queue_size)
        self._hook = hook
        self._writer = asyncio.get_running_loop().create_task(self._write(), name="realtime-write")
        self.overflowed = False

    def send(self, event: dict[str, Any]) -> None:
        """Queue one event (GA name; renamed for beta). Never blocks the caller."""
        if self.overflowed or self.ws.closed:
            return
        kind = event["type"]
        if self.dialect == "beta":
            kind = _BETA_NAMES.get(kind, kind)
        out = {"event_id": new_id("event"), **event, "type": kind}
        if self._hook is not None:
            self._hook(self.dialect, out)
        try:
            self._queue.put_nowait(json.dumps(out))
        except asyncio.QueueFull:
            self.overflowed = True
            logger.warning("realtime client is not reading its events; closing the connection")
            asyncio.get_running_loop().create_task(
                self.ws.close(code=1008, message=b"slow_client: event queue full")
            )

    def error(self, err: ProtocolError, event_id: str | None = None) -> None:
        if err.event_id is None:
            err.event_id = event_id
        self.send({"type": "error", "error": err.payload()})

    async def _write(self) -> None:
        while True:
            data = await self._queue.get()
            if data is None or self.ws.closed:
                return
            try:
                await self.ws.send_str(data)
            except (ConnectionResetError, RuntimeError):
                return

    async def aclose(self) -> None:
        """Flush what is queued (bounded), then stop the writer."""
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)
        try:
            await asyncio.wait_for(asyncio.shield(self._writer), 2.0)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            self._writer.cancel()
