"""One client socket of the test server: session config, input audio + VAD, conversation."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from aiohttp import WSMsgType, web

from duplex.agents import g711
from duplex.agents.audio import AudioFrame
from duplex.agents.vad import EnergyVAD, SpeechEnd, SpeechStart, TurnDetector, TurnOptions

from .schema import SchemaError, validate
from .server_response import ServerResponse

if TYPE_CHECKING:
    from .server import RealtimeTestServer

_GA_FMT = {"audio/pcm": "pcm16", "audio/pcmu": "g711_ulaw", "audio/pcma": "g711_alaw"}


#: Session fields replaced as a whole by an update (the others merge key by key).
_WHOLE = {"format", "turn_detection", "transcription", "noise_reduction", "tool_choice"}


def _merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict) and k not in _WHOLE:
            _merge(into[k], v)
        else:
            into[k] = v


class ServerConnection:
    def __init__(
        self, server: RealtimeTestServer, ws: web.WebSocketResponse, number: int, dialect: str
    ):
        self.server = server
        self.ws = ws
        self.number = number
        self.dialect = dialect
        td = {
            "type": "server_vad",
            "threshold": 0.5,
            "prefix_padding_ms": 300,
            "silence_duration_ms": 500,
            "create_response": True,
            "interrupt_response": True,
        }
        if dialect == "ga":
            self.session: dict[str, Any] = {
                "type": "realtime",
                "model": "gpt-realtime",
                "instructions": "default",
                "output_modalities": ["audio"],
                "audio": {
                    "input": {"format": {"type": "audio/pcm", "rate": 24000}, "turn_detection": td},
                    "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"},
                },
            }
        else:
            self.session = {
                "model": "gpt-realtime",
                "instructions": "default",
                "modalities": ["audio", "text"],
                "voice": "alloy",
                "input_audio_format": "pcm16",
                "output_audio_format": "pcm16",
                "turn_detection": td,
            }
        self.items: list[dict[str, Any]] = []
        #: Assistant audio the server holds per item, ms (what truncation is checked against).
        self.item_audio_ms: dict[str, float] = {}
        self.buffer: list[np.ndarray] = []
        self.buffer_ms = 0.0
        self.input_ms = 0.0
        self._detector: TurnDetector | None = None
        self._detector_offset = 0.0
        self._speech_item: str | None = None
        self.active: ServerResponse | None = None
        self.responses: list[ServerResponse] = []
        self.closed = False

    # --- config views ---------------------------------------------------------------------
    def _in(self) -> dict[str, Any]:
        return (
            self.session.get("audio", {}).get("input", {}) if self.dialect == "ga" else self.session
        )

    @property
    def turn_detection(self) -> dict[str, Any] | None:
        return self._in().get("turn_detection")

    @property
    def transcription(self) -> dict[str, Any] | None:
        key = "transcription" if self.dialect == "ga" else "input_audio_transcription"
        return self._in().get(key)

    def _fmt(self, side: str) -> str:
        if self.dialect == "beta":
            return str(self.session.get(f"{side}_audio_format", "pcm16"))
        return _GA_FMT[self.session["audio"][side]["format"]["type"]]

    @property
    def input_format(self) -> str:
        return self._fmt("input")

    @property
    def output_format(self) -> str:
        return self._fmt("output")

    @property
    def modality(self) -> str:
        mods = self.session.get("output_modalities" if self.dialect == "ga" else "modalities") or []
        return "audio" if "audio" in mods else "text"

    # --- wire -----------------------------------------------------------------------------
    async def send(self, event: dict[str, Any]) -> None:
        event = {"event_id": self.server.new_id("event"), **event}
        try:
            validate(event, dialect=self.dialect, side="server")  # type: ignore[arg-type]
        except SchemaError as e:
            self.server.schema_errors.append(f"server sent: {e}")
        if event["type"] == "error":
            self.server.errors_sent[event["error"].get("code") or event["error"]["type"]] += 1
        self.server.sent.append((self.number, event))
        if not self.ws.closed:
            await self.ws.send_str(json.dumps(event))
        self.server.changed()

    async def error(self, code: str, message: str, event_id: str | None = None) -> None:
        err: dict[str, Any] = {"type": "invalid_request_error", "code": code, "message": message}
        if event_id is not None:
            err["event_id"] = event_id
        await self.send({"type": "error", "error": err})

    def name(self, ga: str, beta: str) -> str:
        return ga if self.dialect == "ga" else beta

    async def send_item_ack(self, item: dict[str, Any]) -> None:
        prev = self.previous_of(item["id"])
        if self.dialect == "ga":
            await self.send(
                {"type": "conversation.item.added", "item": item, "previous_item_id": prev}
            )
            await self.send(
                {"type": "conversation.item.done", "item": item, "previous_item_id": prev}
            )
        else:
            await self.send(
                {"type": "conversation.item.created", "item": item, "previous_item_id": prev}
            )

    def previous_of(self, item_id: str) -> str | None:
        ids = [it["id"] for it in self.items]
        i = ids.index(item_id)
        return ids[i - 1] if i else None

    def find(self, item_id: str) -> dict[str, Any] | None:
        return next((it for it in self.items if it["id"] == item_id), None)

    async def close(self) -> None:
        self.closed = True
        if self.active is not None:
            self.active.abandon()
        await self.ws.close()

    # --- loop -----------------------------------------------------------------------------
    async def run(self) -> None:
        created = {"type": "session.created", "session": self._session_echo()}
        await self.send(created)
        if self.dialect == "beta":
            conv = {"id": self.server.new_id("conv"), "object": "realtime.conversation"}
            await self.send({"type": "conversation.created", "conversation": conv})
        async for msg in self.ws:
            if msg.type != WSMsgType.TEXT:
                continue
            gate = self.server.read_gate
            if gate is not None:
                await gate.wait()
            event = json.loads(msg.data)
            self.server.received.append((self.number, event))
            self.server.received_at.append(time.monotonic())
            try:
                validate(event, dialect=self.dialect, side="client")  # type: ignore[arg-type]
            except SchemaError as e:
                self.server.schema_errors.append(f"client sent: {e}")
                await self.error("invalid_request_error", str(e)[:200], event.get("event_id"))
                continue
            if not isinstance(event.get("event_id"), str):
                self.server.schema_errors.append(f"client event without event_id: {event['type']}")
            fault = self.server.fail_next.pop(event["type"], None)
            if fault is not None:
                await self.error(fault[0], fault[1], event.get("event_id"))
                continue
            handler = getattr(self, "_on_" + event["type"].replace(".", "_"), None)
            if handler is not None:
                await handler(event)
            self.server.changed()
        self.closed = True
        if self.active is not None:
            self.active.abandon()

    def _session_echo(self) -> dict[str, Any]:
        if self.dialect == "ga":
            return dict(self.session)
        return {"id": f"sess_{self.number}", **self.session}

    # --- client events --------------------------------------------------------------------
    async def _on_session_update(self, ev: dict[str, Any]) -> None:
        _merge(self.session, ev["session"])
        self._detector = None
        await self.send({"type": "session.updated", "session": self._session_echo()})

    async def _on_input_audio_buffer_append(self, ev: dict[str, Any]) -> None:
        raw = base64.b64decode(ev["audio"])
        fmt = self.input_format
        if fmt == "pcm16":
            frame = AudioFrame.from_pcm16(raw, 24000)
        else:
            frame = g711.decode(raw, "ulaw" if fmt == "g711_ulaw" else "alaw", 8000)
        self.buffer.append(frame.data[:, 0])
        self.buffer_ms += frame.duration_ms
        self.input_ms += frame.duration_ms
        td = self.turn_detection
        if td is None:
            return
        if self._detector is None:
            opts = TurnOptions(
                threshold=float(td.get("threshold", 0.5)),
                prefix_padding_ms=float(td.get("prefix_padding_ms", 300)),
                silence_duration_ms=float(td.get("silence_duration_ms", 500)),
            )
            self._detector = TurnDetector(EnergyVAD(), opts, input_rate=frame.sample_rate)
            self._detector_offset = self.input_ms - frame.duration_ms
        for turn_event in self._detector.push(frame):
            at = int(self._detector_offset + turn_event.at_ms)
            if isinstance(turn_event, SpeechStart):
                self._speech_item = self.server.new_id("item")
                await self.send(
                    {
                        "type": "input_audio_buffer.speech_started",
                        "audio_start_ms": at,
                        "item_id": self._speech_item,
                    }
                )
                if td.get("interrupt_response", True) and self.active is not None:
                    self.active.cancel("turn_detected")
            elif isinstance(turn_event, SpeechEnd) and self._speech_item:
                item_id, self._speech_item = self._speech_item, None
                await self.send(
                    {
                        "type": "input_audio_buffer.speech_stopped",
                        "audio_end_ms": at,
                        "item_id": item_id,
                    }
                )
                await self._commit(item_id)
                await self.server.hold_point("before_response")
                cancelling = self.active
                if cancelling is not None and cancelling.cancel_reason and cancelling.task:
                    # Audio arrives here faster than real time: a reply this turn's speech
                    # cancelled may not have ended yet, though the service would have ended
                    # it long before the caller stopped speaking. Let it end first.
                    await asyncio.wait({cancelling.task})
                if td.get("create_response", True) and self.active is None and not self.closed:
                    self.start_response({}, None)

    async def _on_input_audio_buffer_commit(self, ev: dict[str, Any]) -> None:
        if self.buffer_ms < 100:
            await self.error(
                "input_audio_buffer_commit_empty",
                f"buffer too small: {self.buffer_ms:.0f} ms of audio, at least 100 ms required",
                ev.get("event_id"),
            )
            return
        await self._commit(self.server.new_id("item"))

    async def _on_input_audio_buffer_clear(self, ev: dict[str, Any]) -> None:
        self.buffer.clear()
        self.buffer_ms = 0.0
        await self.send({"type": "input_audio_buffer.cleared"})

    async def _commit(self, item_id: str) -> None:
        self.buffer.clear()
        self.buffer_ms = 0.0
        prev = self.items[-1]["id"] if self.items else None
        item: dict[str, Any] = {
            "id": item_id,
            "type": "message",
            "role": "user",
            "object": "realtime.item",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        self.items.append(item)
        await self.send(
            {"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": prev}
        )
        await self.send_item_ack(item)
        await self.server.hold_point("after_commit")
        if self.transcription:
            await self._transcribe(item)

    async def _transcribe(self, item: dict[str, Any]) -> None:
        script = self.server.next_transcript()
        text = script if isinstance(script, str) else script.partial
        base = {"item_id": item["id"], "content_index": 0}
        for i, w in enumerate(text.split(" ") if text else ()):
            await self.send(
                {
                    "type": "conversation.item.input_audio_transcription.delta",
                    **base,
                    "delta": w if i == 0 else " " + w,
                }
            )
        if not isinstance(script, str):
            error = {
                "type": "transcription_error",
                "code": "audio_unintelligible",
                "message": script.message,
            }
            await self.send(
                {
                    "type": "conversation.item.input_audio_transcription.failed",
                    **base,
                    "error": error,
                }
            )
            return
        item["content"][0]["transcript"] = text
        await self.send(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                **base,
                "transcript": text,
                "usage": {"type": "duration", "seconds": 1.0},
            }
        )

    async def _on_conversation_item_create(self, ev: dict[str, Any]) -> None:
        item = dict(ev["item"])
        eid = ev.get("event_id")
        item.setdefault("id", self.server.new_id("item"))
        if self.find(item["id"]) is not None:
            await self.error("item_already_exists", f"Item {item['id']} already exists", eid)
            return
        if item["type"] == "message" and not item.get("content"):
            await self.error("invalid_request_error", "item.content must not be empty", eid)
            return
        prev = ev.get("previous_item_id")
        if prev is None:
            pos = len(self.items)
        elif prev == "root":
            pos = 0
        else:
            ids = [it["id"] for it in self.items]
            if prev not in ids:
                await self.error(
                    "previous_item_not_found", f"Previous item with id '{prev}' not found", eid
                )
                return
            pos = ids.index(prev) + 1
        item.update({"object": "realtime.item", "status": "completed"})
        self.items.insert(pos, item)
        await self.send_item_ack(item)

    async def _on_conversation_item_delete(self, ev: dict[str, Any]) -> None:
        item = self.find(ev["item_id"])
        if item is None:
            await self.error(
                "item_delete_invalid_item_id",
                f"Item with item_id not found: {ev['item_id']}",
                ev.get("event_id"),
            )
            return
        self.items.remove(item)
        await self.send({"type": "conversation.item.deleted", "item_id": ev["item_id"]})

    async def _on_conversation_item_retrieve(self, ev: dict[str, Any]) -> None:
        item = self.find(ev["item_id"])
        if item is None:
            await self.error("item_retrieve_invalid_item_id", "not found", ev.get("event_id"))
            return
        await self.send({"type": "conversation.item.retrieved", "item": item})

    async def _on_conversation_item_truncate(self, ev: dict[str, Any]) -> None:
        eid = ev.get("event_id")
        item = self.find(ev["item_id"])
        if item is None:
            await self.error(
                "item_truncate_invalid_item_id", f"Item with id '{ev['item_id']}' not found", eid
            )
            return
        audio_types = ("output_audio", "audio")
        content = item.get("content") or []
        if item.get("role") != "assistant" or not any(
            c.get("type") in audio_types for c in content
        ):
            await self.error(
                "invalid_value", "Only model output audio messages can be truncated", eid
            )
            return
        have = self.item_audio_ms.get(item["id"], 0.0)
        if ev["content_index"] != 0 or ev["audio_end_ms"] > have:
            await self.error(
                "invalid_value",
                f"audio_end_ms {ev['audio_end_ms']} is beyond the item's audio ({have:.0f} ms)",
                eid,
            )
            return
        self.item_audio_ms[item["id"]] = float(ev["audio_end_ms"])
        for c in content:
            if c.get("type") in audio_types:
                c["transcript"] = ""  # the service drops text the caller did not hear
        await self.send(
            {
                "type": "conversation.item.truncated",
                "item_id": item["id"],
                "content_index": 0,
                "audio_end_ms": ev["audio_end_ms"],
            }
        )

    async def _on_response_create(self, ev: dict[str, Any]) -> None:
        if self.server.race_next_create:
            # Server VAD ends a turn just before this request is processed.
            self.server.race_next_create = False
            self.start_response({}, None)
        if self.active is not None:
            await self.error(
                "conversation_already_has_active_response",
                f"Conversation already has an active response in progress: {self.active.id}",
                ev.get("event_id"),
            )
            return
        self.start_response(ev.get("response") or {}, ev.get("event_id"))

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

    def start_response(self, params: dict[str, Any], event_id: str | None) -> None:
        resp = ServerResponse(self, self.server.next_reply(), params)
        self.active = resp
        self.responses.append(resp)
        resp.start()
