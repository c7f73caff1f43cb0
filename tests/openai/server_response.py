"""The response lifecycle of the test server: created -> items -> deltas -> done.

Streams faster than real time, like the service. A scripted `Reply` can hold
mid-audio (so a test can barge in at a known point) and can drop the socket.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from typing import TYPE_CHECKING, Any

import numpy as np

from duplex.agents import g711
from duplex.agents.audio import AudioFrame

if TYPE_CHECKING:
    from .server import Reply
    from .server_conn import ServerConnection


class ServerResponse:
    def __init__(self, conn: ServerConnection, reply: Reply, params: dict[str, Any]) -> None:
        self.conn = conn
        self.reply = reply
        self.params = params
        self.id = conn.server.new_id("resp")
        self.cancel_reason: str | None = None
        self._cancelled = asyncio.Event()
        self.output: list[dict[str, Any]] = []
        self.task: asyncio.Task[None] | None = None
        self.audio_sent_ms = 0.0

    @property
    def instructions(self) -> str | None:
        return self.params.get("instructions")

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    def cancel(self, reason: str) -> None:
        if self.cancel_reason is None:
            self.cancel_reason = reason
            self._cancelled.set()

    def abandon(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _obj(self, status: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        c = self.conn
        out: dict[str, Any] = {
            "id": self.id,
            "object": "realtime.response",
            "status": status,
            "output": self.output,
            "conversation_id": f"conv_{c.number}",
        }
        meta = self.params.get("metadata")
        if meta and c.server.echo_metadata:
            out["metadata"] = meta
        return {**out, **(extra or {})}

    async def _pause(self) -> bool:
        """Yield to the socket reader; True when the response was cancelled meanwhile."""
        await asyncio.sleep(0)
        return self.cancel_reason is not None

    async def _run(self) -> None:
        c = self.conn
        try:
            await c.send({"type": "response.created", "response": self._obj("in_progress")})
            await c.send(
                {
                    "type": "rate_limits.updated",
                    "rate_limits": [
                        {"name": "requests", "limit": 1000, "remaining": 999, "reset_seconds": 1.0},
                        {
                            "name": "tokens",
                            "limit": 50000,
                            "remaining": 49000,
                            "reset_seconds": 2.5,
                        },
                    ],
                }
            )
            done = False
            for name, args in self.reply.function_calls:
                if await self._pause() or not await self._function_call(name, args):
                    break
            else:
                done = not self.reply.speaks or await self._message()
            if c.ws.closed:
                return
            await self._finish("completed" if done else "cancelled")
        except (ConnectionResetError, asyncio.CancelledError):
            pass

    async def _add_item(self, item: dict[str, Any]) -> None:
        c = self.conn
        c.items.append(item)
        self.output.append(item)
        idx = len(self.output) - 1
        await c.send(
            {
                "type": "response.output_item.added",
                "response_id": self.id,
                "output_index": idx,
                "item": item,
            }
        )
        await c.send_item_ack(item)

    async def _item_done(self, item: dict[str, Any]) -> None:
        c = self.conn
        idx = self.output.index(item)
        await c.send(
            {
                "type": "response.output_item.done",
                "response_id": self.id,
                "output_index": idx,
                "item": item,
            }
        )
        if c.dialect == "ga":
            await c.send(
                {
                    "type": "conversation.item.done",
                    "item": item,
                    "previous_item_id": c.previous_of(item["id"]),
                }
            )

    async def _function_call(self, name: str, args: str) -> bool:
        c = self.conn
        item = {
            "id": c.server.new_id("item"),
            "type": "function_call",
            "object": "realtime.item",
            "status": "in_progress",
            "call_id": c.server.new_id("call"),
            "name": name,
            "arguments": "",
        }
        await self._add_item(item)
        base = {"response_id": self.id, "item_id": item["id"], "output_index": len(self.output) - 1}
        half = len(args) // 2
        for piece in (args[:half], args[half:]):
            await c.send(
                {
                    "type": "response.function_call_arguments.delta",
                    **base,
                    "call_id": item["call_id"],
                    "delta": piece,
                }
            )
            if await self._pause():
                item["status"] = "incomplete"
                await self._item_done(item)
                return False
        item.update({"arguments": args, "status": "completed"})
        done = {
            "type": "response.function_call_arguments.done",
            **base,
            "call_id": item["call_id"],
            "arguments": args,
        }
        if c.dialect == "ga":
            done["name"] = name  # the beta event has no name: it is on the output item
        await c.send(done)
        await self._item_done(item)
        return True

    async def _message(self) -> bool:
        """Stream the assistant message; False when cancelled (or the socket dropped)."""
        c, r = self.conn, self.reply
        text_mode = c.modality == "text" or r.as_text
        ga = c.dialect == "ga"
        item: dict[str, Any] = {
            "id": c.server.new_id("item"),
            "type": "message",
            "role": "assistant",
            "object": "realtime.item",
            "status": "in_progress",
            "content": [],
        }
        await self._add_item(item)
        base = {
            "response_id": self.id,
            "item_id": item["id"],
            "output_index": len(self.output) - 1,
            "content_index": 0,
        }
        part = {"type": "text", "text": ""} if text_mode else {"type": "audio", "transcript": ""}
        await c.send({"type": "response.content_part.added", **base, "part": part})
        words = r.text.split(" ")
        if text_mode:
            for i, w in enumerate(words):
                delta = w if i == 0 else " " + w
                await c.send(
                    {
                        "type": c.name("response.output_text.delta", "response.text.delta"),
                        **base,
                        "delta": delta,
                    }
                )
                if await self._pause():
                    return await self._cut(item)
            await c.send(
                {
                    "type": c.name("response.output_text.done", "response.text.done"),
                    **base,
                    "text": r.text,
                }
            )
            item["content"] = [{"type": "output_text" if ga else "text", "text": r.text}]
        else:
            if not await self._audio(item, base, words):
                return False if c.ws.closed else await self._cut(item)
            await c.send(
                {"type": c.name("response.output_audio.done", "response.audio.done"), **base}
            )
            await c.send(
                {
                    "type": c.name(
                        "response.output_audio_transcript.done", "response.audio_transcript.done"
                    ),
                    **base,
                    "transcript": r.text,
                }
            )
            item["content"] = [{"type": "output_audio" if ga else "audio", "transcript": r.text}]
        item["status"] = "completed"
        done_part = (
            {"type": "text", "text": r.text}
            if text_mode
            else {"type": "audio", "transcript": r.text}
        )
        await c.send({"type": "response.content_part.done", **base, "part": done_part})
        await self._item_done(item)
        return True

    async def _audio(self, item: dict[str, Any], base: dict[str, Any], words: list[str]) -> bool:
        c, r = self.conn, self.reply
        rate = 24000 if c.output_format == "pcm16" else 8000
        n_chunks = max(1, -(-r.audio_ms // r.chunk_ms))
        item["content"] = [
            {"type": "output_audio" if c.dialect == "ga" else "audio", "transcript": ""}
        ]
        per_chunk = -(-len(words) // n_chunks)
        said: list[str] = []
        for k in range(n_chunks):
            ms = min(r.chunk_ms, r.audio_ms - k * r.chunk_ms)
            if r.audio is not None and rate == r.audio.sample_rate:
                start = round(rate * k * r.chunk_ms / 1000)
                frame = r.audio.slice(start, start + round(rate * ms / 1000))
            else:
                t = np.arange(int(rate * ms / 1000)) / rate
                pcm = (0.2 * np.sin(2 * np.pi * 330 * t) * 32767).astype(np.int16)
                frame = AudioFrame(pcm, rate)
            if c.output_format == "pcm16":
                payload = frame.to_pcm16()
            else:
                payload = g711.encode(frame, "ulaw" if c.output_format == "g711_ulaw" else "alaw")
            await c.send(
                {
                    "type": c.name("response.output_audio.delta", "response.audio.delta"),
                    **base,
                    "delta": base64.b64encode(payload).decode("ascii"),
                }
            )
            self.audio_sent_ms += ms
            c.item_audio_ms[item["id"]] = self.audio_sent_ms
            chunk_words = words[k * per_chunk : (k + 1) * per_chunk]
            if chunk_words:
                delta = (" " if said else "") + " ".join(chunk_words)
                said += chunk_words
                item["content"][0]["transcript"] = " ".join(said)
                await c.send(
                    {
                        "type": c.name(
                            "response.output_audio_transcript.delta",
                            "response.audio_transcript.delta",
                        ),
                        **base,
                        "delta": delta,
                    }
                )
            if r.close_after_chunks is not None and k + 1 >= r.close_after_chunks:
                await c.ws.close(code=1011, message=b"injected fault")
                return False
            if await self._pause():
                return False
            if (
                r.hold_after_ms is not None
                and self.audio_sent_ms >= r.hold_after_ms
                and not r.release.is_set()
            ):
                waiters = [
                    asyncio.ensure_future(r.release.wait()),
                    asyncio.ensure_future(self._cancelled.wait()),
                ]
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                for w in waiters:
                    w.cancel()
                if self.cancel_reason is not None:
                    return False
        return True

    async def _cut(self, item: dict[str, Any]) -> bool:
        item["status"] = "incomplete"
        await self._item_done(item)
        return False

    async def _finish(self, status: str) -> None:
        c = self.conn
        if self.reply.status != "completed" and status == "completed":
            status = self.reply.status
        extra: dict[str, Any] = {"usage": self._usage()}
        if status == "cancelled":
            extra["status_details"] = {
                "type": "cancelled",
                "reason": self.cancel_reason or "client_cancelled",
            }
        elif status == "failed":
            extra["status_details"] = {
                "type": "failed",
                "error": {"type": "server_error", "code": "server_error"},
            }
        if c.active is self:
            c.active = None
        with contextlib.suppress(ConnectionResetError):
            await c.send({"type": "response.done", "response": self._obj(status, extra)})

    def _usage(self) -> dict[str, Any]:
        out_audio = int(self.audio_sent_ms / 50)
        out_text = len(self.reply.text.split())
        in_text, in_audio, cached = 40, 10 * len(self.conn.items), 16
        return {
            "input_tokens": in_text + in_audio,
            "output_tokens": out_audio + out_text,
            "total_tokens": in_text + in_audio + out_audio + out_text,
            "input_token_details": {
                "text_tokens": in_text,
                "audio_tokens": in_audio,
                "cached_tokens": cached,
            },
            "output_token_details": {"text_tokens": out_text, "audio_tokens": out_audio},
        }
