"""`OpenAIRealtime` against the project's OpenAI Realtime test server (server VAD on)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from duplex.backends.openai import OpenAIRealtime, ReconnectPolicy

from ..openai.server import API_KEY, RealtimeTestServer, Reply
from .rig import RACES, ReplySpec, Rig, SItem
from .signal import tag_of_sample

FAST = ReconnectPolicy(max_attempts=4, initial_delay=0.01, max_delay=0.05)
CHUNK_MS = 20


def _text(content: list[dict[str, Any]]) -> str:
    out = []
    for c in content:
        out.append(c.get("transcript") or c.get("text") or "")
    return "".join(out)


class OpenAIRig(Rig):
    name = "openai"
    input_rate = 24000
    can_drop = True

    def __init__(self, make_default: Callable[[], ReplySpec], dialect: str = "ga") -> None:
        self.server = RealtimeTestServer()
        self.server.default_reply = lambda: self._reply(make_default())
        self.dialect = dialect
        self.backend: OpenAIRealtime  # made in start(), once the server has its port

    async def start(self) -> None:
        await self.server.start()
        self.backend = OpenAIRealtime(
            base_url=self.server.base_url,
            api_key=API_KEY,
            env={},
            reconnect=FAST,
            dialect=self.dialect,  # type: ignore[arg-type]
        )

    async def stop(self) -> None:
        await self.server.close()

    def _reply(self, spec: ReplySpec) -> Reply:
        calls = tuple(spec.calls)
        if not spec.speaks:
            return Reply(text="", audio_ms=0, function_calls=calls)
        drop = spec.drop_after_ms // CHUNK_MS if spec.drop_after_ms else None
        return Reply(
            text=spec.text,
            audio_ms=spec.audio_ms,
            audio=self.reply_audio(spec),
            function_calls=calls,
            chunk_ms=CHUNK_MS,
            close_after_chunks=drop,
        )

    def plan(self, spec: ReplySpec) -> None:
        self.server.replies.append(self._reply(spec))

    def expect_words(self, text: str) -> None:
        self.server.transcripts.append(text)

    def responses_started(self) -> int:
        return sum(len(c.responses) for c in self.server.connections)

    def idle(self) -> bool:
        conns = self.server.connections
        return bool(conns) and all(c.active is None or c.closed for c in conns)

    def conversation(self) -> list[SItem]:
        conn = self.server.current
        out: list[SItem] = []
        for it in conn.items:
            kind = it["type"]
            if kind == "message":
                role = it["role"]
                content = it.get("content") or []
                text = _text(content)
                if role == "assistant":
                    audio = any(c.get("type") in ("audio", "output_audio") for c in content)
                    ms = conn.item_audio_ms.get(it["id"]) if audio else None
                    out.append(SItem(it["id"], "assistant", text, ms))
                else:
                    out.append(SItem(it["id"], "user" if role == "user" else "system", text))
            elif kind == "function_call":
                out.append(
                    SItem(it["id"], "call", it["arguments"], call_id=it["call_id"], name=it["name"])
                )
            elif kind == "function_call_output":
                out.append(SItem(it["id"], "output", it["output"], call_id=it["call_id"]))
        return out

    def item_tags(self) -> dict[str, int]:
        tags: dict[str, int] = {}
        for conn in self.server.connections:
            for resp in conn.responses:
                audio = resp.reply.audio
                if audio is None:
                    continue
                for item in resp.output:
                    if item.get("type") == "message":
                        tags[item["id"]] = tag_of_sample(int(audio.data[0, 0]))
        return tags

    def truncations(self) -> list[tuple[str, int]]:
        return [
            (e["item_id"], int(e["audio_end_ms"]))
            for e in self.server.of_type("conversation.item.truncate")
        ]

    def output_creations(self) -> Counter[str]:
        items = self.server.created_items("function_call_output", self.server.current.number)
        return Counter(i["call_id"] for i in items)

    def check_server(self) -> list[str]:
        out = [f"schema: {e}" for e in self.server.schema_errors]
        for conn in self.server.connections:
            made = Counter(
                i["call_id"] for i in self.server.created_items("function_call_output", conn.number)
            )
            out += [
                f"connection {conn.number}: output of {call_id} created {n} times"
                for call_id, n in made.items()
                if n > 1
            ]
        out += [
            f"server answered error {code} x{n}"
            for code, n in self.server.errors_sent.items()
            if code not in RACES
        ]
        return out
