"""One client socket of the benchmark server: server VAD over the appends, 1x-paced replies.

The events and their fields follow the GA protocol as tests/openai/server.py
(which validates them against the openai SDK's types) sends them; here nothing is
validated, to keep the server's CPU out of the way.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from . import config as C
from .server_reply import Reply
from .server_state import EnergyVAD, ResponseRecord, ServerStats, TurnRecord, new_id


class Connection:
    def __init__(self, ws: web.WebSocketResponse, sid: str, stats: ServerStats) -> None:
        self.ws = ws
        self.sid = sid
        self.stats = stats
        self.rec = stats.session(sid)
        self.session: dict[str, Any] = {
            "type": "realtime",
            "object": "realtime.session",
            "id": new_id("sess"),
            "model": sid,
            "output_modalities": ["audio"],
            "instructions": "",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": C.SERVER_RATE},
                    "turn_detection": {
                        "type": "server_vad",
                        "threshold": 0.5,
                        "prefix_padding_ms": C.VAD_PREFIX_MS,
                        "silence_duration_ms": C.VAD_SILENCE_MS,
                        "create_response": True,
                        "interrupt_response": True,
                    },
                },
                "output": {
                    "format": {"type": "audio/pcm", "rate": C.SERVER_RATE},
                    "voice": "marin",
                },
            },
        }
        self.vad = EnergyVAD()
        self.items: list[dict[str, Any]] = []
        self.item_audio_ms: dict[str, float] = {}
        self.buffer_ms = 0.0
        self._speech_item: str | None = None
        self._last_speech_at: float | None = None
        self.active: Reply | None = None

    # --- wire -----------------------------------------------------------------------------
    async def send(self, event: dict[str, Any]) -> None:
        if self.ws.closed:
            return
        event["event_id"] = new_id("event")
        with contextlib.suppress(ConnectionResetError):
            await self.ws.send_str(json.dumps(event, separators=(",", ":")))

    async def error(self, code: str, message: str, event_id: str | None) -> None:
        self.rec.errors[code] += 1
        self.stats.errors[code] += 1
        err: dict[str, Any] = {"type": "invalid_request_error", "code": code, "message": message}
        if event_id is not None:
            err["event_id"] = event_id
        await self.send({"type": "error", "error": err})

    def _prev(self, item_id: str) -> str | None:
        for i, it in enumerate(self.items):
            if it["id"] == item_id:
                return self.items[i - 1]["id"] if i else None
        return None

    async def ack_item(self, item: dict[str, Any]) -> None:
        prev = self._prev(item["id"])
        await self.send({"type": "conversation.item.added", "item": item, "previous_item_id": prev})
        await self.send({"type": "conversation.item.done", "item": item, "previous_item_id": prev})

    def find(self, item_id: str) -> dict[str, Any] | None:
        return next((it for it in self.items if it["id"] == item_id), None)

    async def close(self) -> None:
        if self.active is not None:
            self.active.abandon()
        await self.ws.close()

    # --- loop -----------------------------------------------------------------------------
    async def run(self) -> None:
        await self.send({"type": "session.created", "session": self.session})
        async for msg in self.ws:
            now = time.monotonic()
            if msg.type != WSMsgType.TEXT:
                continue
            event = json.loads(msg.data)
            etype = event.get("type", "")
            self.rec.received[etype] += 1
            if etype == "input_audio_buffer.append":
                await self._append(event, now)
                continue
            handler = getattr(self, "_on_" + etype.replace(".", "_"), None)
            if handler is not None:
                await handler(event)
        if self.active is not None:
            self.active.abandon()

    # --- client events --------------------------------------------------------------------
    async def _on_session_update(self, ev: dict[str, Any]) -> None:
        _merge(self.session, ev.get("session") or {})
        await self.send({"type": "session.updated", "session": self.session})

    async def _append(self, ev: dict[str, Any], received_at: float) -> None:
        self.rec.appends += 1
        pcm = np.frombuffer(base64.b64decode(ev["audio"]), dtype="<i2")
        if pcm.size == 0:
            return
        self.buffer_ms += 1000.0 * pcm.size / C.SERVER_RATE
        if int(np.max(np.abs(pcm.astype(np.int32)))) > C.SPEECH_LEVEL:
            self._last_speech_at = received_at
        for kind, at_ms in self.vad.push(pcm):
            if kind == "started":
                await self._speech_started(at_ms)
            else:
                await self._speech_stopped(at_ms)

    async def _speech_started(self, at_ms: float) -> None:
        self._speech_item = new_id("item")
        self.rec.speech_started_at.append(time.monotonic())
        await self.send(
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": int(at_ms),
                "item_id": self._speech_item,
            }
        )
        if self.active is not None:
            self.active.cancel("turn_detected")

    async def _speech_stopped(self, at_ms: float) -> None:
        item_id = self._speech_item or new_id("item")
        self._speech_item = None
        last = self._last_speech_at if self._last_speech_at is not None else time.monotonic()
        self.rec.turns.append(TurnRecord(last, time.monotonic()))
        await self.send(
            {
                "type": "input_audio_buffer.speech_stopped",
                "audio_end_ms": int(at_ms),
                "item_id": item_id,
            }
        )
        await self._commit(item_id)
        if self.active is None:
            self.start_response(last)

    async def _commit(self, item_id: str) -> None:
        self.buffer_ms = 0.0
        prev = self.items[-1]["id"] if self.items else None
        item = {
            "id": item_id,
            "type": "message",
            "role": "user",
            "object": "realtime.item",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": "hello there"}],
        }
        self.items.append(item)
        await self.send(
            {"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": prev}
        )
        await self.ack_item(item)
        await self.send(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item_id,
                "content_index": 0,
                "transcript": "hello there",
                "usage": {"type": "duration", "seconds": 1.0},
            }
        )

    async def _on_input_audio_buffer_commit(self, ev: dict[str, Any]) -> None:
        if self.buffer_ms < 100:
            await self.error(
                "input_audio_buffer_commit_empty", "buffer too small", ev.get("event_id")
            )
            return
        await self._commit(new_id("item"))

    async def _on_input_audio_buffer_clear(self, ev: dict[str, Any]) -> None:
        self.buffer_ms = 0.0
        await self.send({"type": "input_audio_buffer.cleared"})

    async def _on_conversation_item_create(self, ev: dict[str, Any]) -> None:
        item = dict(ev["item"])
        item.setdefault("id", new_id("item"))
        eid = ev.get("event_id")
        if self.find(item["id"]) is not None:
            await self.error("item_already_exists", f"Item {item['id']} already exists", eid)
            return
        prev = ev.get("previous_item_id")
        ids = [it["id"] for it in self.items]
        if prev is None:
            pos = len(self.items)
        elif prev == "root":
            pos = 0
        elif prev in ids:
            pos = ids.index(prev) + 1
        else:
            await self.error("previous_item_not_found", f"Previous item {prev!r} not found", eid)
            return
        item.update({"object": "realtime.item", "status": "completed"})
        self.items.insert(pos, item)
        await self.ack_item(item)

    async def _on_conversation_item_delete(self, ev: dict[str, Any]) -> None:
        item = self.find(ev["item_id"])
        if item is None:
            await self.error("item_delete_invalid_item_id", "Item not found", ev.get("event_id"))
            return
        self.items.remove(item)
        await self.send({"type": "conversation.item.deleted", "item_id": ev["item_id"]})

    async def _on_conversation_item_truncate(self, ev: dict[str, Any]) -> None:
        eid = ev.get("event_id")
        item = self.find(ev["item_id"])
        if item is None or item.get("role") != "assistant":
            await self.error("item_truncate_invalid_item_id", "Item not found", eid)
            return
        have = self.item_audio_ms.get(item["id"], 0.0)
        if ev.get("audio_end_ms", 0) > have:
            await self.error("invalid_value", "audio_end_ms is beyond the item's audio", eid)
            return
        self.item_audio_ms[item["id"]] = float(ev["audio_end_ms"])
        await self.send(
            {
                "type": "conversation.item.truncated",
                "item_id": item["id"],
                "content_index": 0,
                "audio_end_ms": ev["audio_end_ms"],
            }
        )

    async def _on_response_create(self, ev: dict[str, Any]) -> None:
        if self.active is not None:
            await self.error(
                "conversation_already_has_active_response",
                f"Conversation already has an active response in progress: {self.active.id}",
                ev.get("event_id"),
            )
            return
        self.start_response(None, (ev.get("response") or {}).get("metadata"))

    async def _on_response_cancel(self, ev: dict[str, Any]) -> None:
        rid = ev.get("response_id")
        if self.active is None or (rid is not None and rid != self.active.id):
            await self.error(
                "response_cancel_not_active",
                "Cancellation failed: no active response found",
                ev.get("event_id"),
            )
            return
        self.active.cancel("client_cancelled")

    def start_response(
        self, turn_last_speech_at: float | None, metadata: dict[str, Any] | None = None
    ) -> None:
        rec = ResponseRecord(time.monotonic(), turn_last_speech_at)
        self.rec.responses.append(rec)
        self.active = Reply(self, rec, metadata)


def _merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v
