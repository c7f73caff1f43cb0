"""One reply of the benchmark server: created, item, audio deltas paced at 1x, done or cancelled."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from . import config as C
from .server_state import ResponseRecord, new_id

if TYPE_CHECKING:
    from .server_conn import Connection


def _tone_chunk() -> str:
    n = C.SERVER_RATE * C.CHUNK_MS // 1000
    t = np.arange(n) / C.SERVER_RATE
    pcm = (0.2 * 32767 * np.sin(2 * np.pi * 330.0 * t)).astype("<i2")
    return base64.b64encode(pcm.tobytes()).decode("ascii")


#: Every reply delta carries the same pre-encoded 50 ms of audio: nothing to compute per send.
TONE_B64 = _tone_chunk()
USAGE = {
    "input_tokens": 50,
    "output_tokens": 60,
    "total_tokens": 110,
    "input_token_details": {"text_tokens": 40, "audio_tokens": 10, "cached_tokens": 0},
    "output_token_details": {"text_tokens": 10, "audio_tokens": 50},
}


class Reply:
    """Streams one reply at 1x: created, item, deltas on the clock, done (or cancelled)."""

    def __init__(self, conn: Connection, rec: ResponseRecord, meta: dict[str, Any] | None) -> None:
        self.conn = conn
        self.rec = rec
        self.meta = meta
        self.id = new_id("resp")
        self.item_id = new_id("item")
        self.output: list[dict[str, Any]] = []
        self._finished = False
        self.task = asyncio.get_running_loop().create_task(self._run())

    def cancel(self, reason: str) -> None:
        if self.rec.reason is None and not self._finished:
            self.rec.reason = reason
            self.task.cancel()

    def abandon(self) -> None:
        self._finished = True
        self.task.cancel()

    def _obj(self, status: str, **extra: Any) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "object": "realtime.response",
            "status": status,
            "output": self.output,
            "conversation_id": "conv_bench",
        }
        if self.meta:
            out["metadata"] = self.meta
        out.update(extra)
        return out

    async def _run(self) -> None:
        c = self.conn
        item: dict[str, Any] = {
            "id": self.item_id,
            "type": "message",
            "role": "assistant",
            "object": "realtime.item",
            "status": "in_progress",
            "content": [],
        }
        base = {
            "response_id": self.id,
            "item_id": self.item_id,
            "output_index": 0,
            "content_index": 0,
        }
        try:
            await c.send({"type": "response.created", "response": self._obj("in_progress")})
            c.items.append(item)
            self.output.append(item)
            await c.send(
                {
                    "type": "response.output_item.added",
                    "response_id": self.id,
                    "output_index": 0,
                    "item": item,
                }
            )
            await c.ack_item(item)
            part = {"type": "audio", "transcript": ""}
            await c.send({"type": "response.content_part.added", **base, "part": part})
            item["content"] = [{"type": "output_audio", "transcript": ""}]
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            n = C.REPLY_MS // C.CHUNK_MS
            for k in range(n):
                due = t0 + max(0, k * C.CHUNK_MS - C.LEAD_MS) / 1000.0
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if self.rec.first_delta_at is None:
                    self.rec.first_delta_at = time.monotonic()
                await c.send({"type": "response.output_audio.delta", **base, "delta": TONE_B64})
                self.rec.audio_ms += C.CHUNK_MS
                c.item_audio_ms[self.item_id] = self.rec.audio_ms
                if k == 0:
                    await c.send(
                        {"type": "response.output_audio_transcript.delta", **base, "delta": "Sure."}
                    )
            await c.send({"type": "response.output_audio.done", **base})
            await c.send(
                {"type": "response.output_audio_transcript.done", **base, "transcript": "Sure."}
            )
            item["content"] = [{"type": "output_audio", "transcript": "Sure."}]
            item["status"] = "completed"
            await self._close_item(item, base, {"type": "audio", "transcript": "Sure."})
            await self._finish("completed")
        except asyncio.CancelledError:
            if self._finished:
                return
            item["status"] = "incomplete"
            with contextlib.suppress(Exception):
                await self._close_item(item, base, {"type": "audio", "transcript": ""})
                await self._finish("cancelled")

    async def _close_item(
        self, item: dict[str, Any], base: dict[str, Any], part: dict[str, Any]
    ) -> None:
        c = self.conn
        await c.send({"type": "response.content_part.done", **base, "part": part})
        await c.send(
            {
                "type": "response.output_item.done",
                "response_id": self.id,
                "output_index": 0,
                "item": item,
            }
        )
        await c.send(
            {
                "type": "conversation.item.done",
                "item": item,
                "previous_item_id": c._prev(item["id"]),
            }
        )

    async def _finish(self, status: str) -> None:
        c = self.conn
        self._finished = True
        self.rec.status = status
        self.rec.ended_at = time.monotonic()
        if c.active is self:
            c.active = None
        extra: dict[str, Any] = {"usage": USAGE}
        if status == "cancelled":
            extra["status_details"] = {
                "type": "cancelled",
                "reason": self.rec.reason or "client_cancelled",
            }
        await c.send({"type": "response.done", "response": self._obj(status, **extra)})
