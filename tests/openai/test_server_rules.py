"""The test server enforces the service's rules, so "zero errors" in other tests means something."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from .server import API_KEY, RealtimeTestServer


class RawClient:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.n = 0

    async def call(self, event: dict[str, Any], want: str) -> dict[str, Any]:
        self.n += 1
        event_id = f"evt_raw_{self.n}"
        await self.ws.send_str(json.dumps({"event_id": event_id, **event}))
        while True:
            msg: dict[str, Any] = json.loads((await asyncio.wait_for(self.ws.receive(), 5)).data)
            if msg["type"] == want:
                if want == "error":
                    assert msg["error"]["event_id"] == event_id
                return msg


async def test_rules(server: RealtimeTestServer) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(
            f"ws://127.0.0.1:{server.port}/v1/realtime?model=gpt-realtime",
            headers={"Authorization": f"Bearer {API_KEY}"},
        ) as ws,
    ):
        c = RawClient(ws)
        user = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "hi"}],
        }
        err = await c.call(
            {"type": "conversation.item.create", "item": {**user, "id": "u1"}},
            "conversation.item.added",
        )
        err = await c.call(
            {
                "type": "conversation.item.truncate",
                "item_id": "nope",
                "content_index": 0,
                "audio_end_ms": 10,
            },
            "error",
        )
        assert err["error"]["code"] == "item_truncate_invalid_item_id"
        err = await c.call(
            {
                "type": "conversation.item.truncate",
                "item_id": "u1",
                "content_index": 0,
                "audio_end_ms": 10,
            },
            "error",
        )
        assert err["error"]["message"] == "Only model output audio messages can be truncated"
        err = await c.call({"type": "response.cancel"}, "error")
        assert err["error"]["code"] == "response_cancel_not_active"
        err = await c.call({"type": "input_audio_buffer.commit"}, "error")
        assert err["error"]["code"] == "input_audio_buffer_commit_empty"
        err = await c.call(
            {
                "type": "conversation.item.create",
                "previous_item_id": "gone",
                "item": {**user, "id": "u2"},
            },
            "error",
        )
        assert err["error"]["code"] == "previous_item_not_found"
        err = await c.call(
            {"type": "conversation.item.create", "item": {**user, "id": "u1"}}, "error"
        )
        assert err["error"]["code"] == "item_already_exists"
        err = await c.call({"type": "conversation.item.delete", "item_id": "gone"}, "error")
        assert err["error"]["code"] == "item_delete_invalid_item_id"
        # a reply, then truncation beyond its audio and a second reply while it runs
        server.replies.append(
            __import__("tests.openai.server", fromlist=["Reply"]).Reply(
                audio_ms=300, hold_after_ms=300
            )
        )
        await c.call({"type": "response.create"}, "response.created")
        err = await c.call({"type": "response.create"}, "error")
        assert err["error"]["code"] == "conversation_already_has_active_response"
        item_id = server.current.responses[0].output[0]["id"]
        await server.wait_until(lambda: server.current.item_audio_ms.get(item_id) == 300)
        err = await c.call(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": 301,
            },
            "error",
        )
        assert err["error"]["code"] == "invalid_value" and "beyond" in err["error"]["message"]
        # an event that does not fit the SDK schema is refused (and recorded)
        err = await c.call(
            {"type": "session.update", "session": {"type": "realtime", "voicee": "x"}}, "error"
        )
        assert err["error"]["code"] == "invalid_request_error"
    assert len(server.schema_errors) == 1 and "voicee" in server.schema_errors[0]
    server.schema_errors.clear()
