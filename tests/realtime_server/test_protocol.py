"""Protocol coverage with the openai SDK: session, items, manual turns, G.711, responses, errors."""

from __future__ import annotations

import asyncio
import base64
import json

import aiohttp
import pytest

from duplex.agents import g711
from duplex.agents.audio import AudioFrame
from duplex.agents.resample import Resampler

from ..cascade.chat_server import Gate, Text
from .conftest import API_KEY, Checked
from .helpers import connect, hear, utterance, words


def text_item(text: str, item_id: str, role: str = "user") -> dict[str, object]:
    kind = "output_text" if role == "assistant" else "input_text"
    return {
        "id": item_id,
        "type": "message",
        "role": role,
        "content": [{"type": kind, "text": text}],
    }


async def test_session_update_is_echoed_and_unsupported_parts_refused(echo_server: Checked) -> None:
    async with connect(echo_server) as client:
        await client.wait_for("session.created")
        vad = {
            "type": "server_vad",
            "threshold": 0.6,
            "prefix_padding_ms": 200,
            "silence_duration_ms": 700,
            "create_response": False,
            "interrupt_response": False,
        }
        await client.conn.session.update(
            session={
                "type": "realtime",
                "instructions": "Be brief.",
                "audio": {
                    "input": {"format": {"type": "audio/pcmu"}, "turn_detection": vad},
                    "output": {"format": {"type": "audio/pcma"}, "voice": "marin"},
                },
            }
        )
        updated = await client.wait_for("session.updated")
        s = updated.session
        assert s.instructions == "Be brief." and s.audio.output.voice == "marin"
        assert (
            s.audio.input.format.type == "audio/pcmu" and s.audio.output.format.type == "audio/pcma"
        )
        assert s.audio.input.turn_detection.silence_duration_ms == 700
        assert s.audio.input.turn_detection.create_response is False

        mcp = {"type": "mcp", "server_label": "x", "server_url": "https://example.invalid"}
        await client.send(
            {
                "type": "session.update",
                "event_id": "ev_mcp",
                "session": {"type": "realtime", "tools": [mcp]},
            }
        )
        err = await client.wait_for("error")
        assert err.error.code == "unsupported_feature" and err.error.event_id == "ev_mcp"
        assert err.error.param == "session.tools[0].type"
        await client.send({"type": "session.update", "session": {"type": "transcription"}})
        err = await client.wait_for("error", lambda e: e.error.param == "session.type")
        assert err.error.code == "unsupported_feature"
        assert len(client.of("session.updated")) == 1  # refused updates changed nothing


async def test_conversation_items_with_previous_item_id(echo_server: Checked) -> None:
    async with connect(echo_server) as client:
        await client.conn.session.update(
            session={"type": "realtime", "audio": {"input": {"turn_detection": None}}}
        )
        await client.wait_for("session.updated")
        await client.conn.conversation.item.create(item=text_item("first question", "item_a"))
        await client.conn.conversation.item.create(
            item=text_item("be polite", "item_sys", "system"), previous_item_id="root"
        )
        await client.conn.conversation.item.create(
            item=text_item("second question", "item_b"), previous_item_id="item_sys"
        )
        added = [
            await client.wait_for("conversation.item.added", lambda e, i=i: e.item.id == i)
            for i in ("item_a", "item_sys", "item_b")
        ]
        assert [a.previous_item_id for a in added] == [None, None, "item_sys"]
        assert len(client.of("conversation.item.done")) == 3

        await client.conn.conversation.item.retrieve(item_id="item_b")
        got = await client.wait_for("conversation.item.retrieved")
        assert got.item.content[0].text == "second question"

        await client.send(
            {
                "type": "conversation.item.create",
                "event_id": "ev_prev",
                "item": text_item("x", "item_x"),
                "previous_item_id": "nope",
            }
        )
        err = await client.wait_for("error", lambda e: e.error.event_id == "ev_prev")
        assert err.error.code == "previous_item_not_found"
        await client.send(
            {"type": "conversation.item.delete", "event_id": "ev_del", "item_id": "nope"}
        )
        err = await client.wait_for("error", lambda e: e.error.event_id == "ev_del")
        assert err.error.code == "item_delete_invalid_item_id"
        await client.send(
            {"type": "conversation.item.retrieve", "event_id": "ev_get", "item_id": "nope"}
        )
        err = await client.wait_for("error", lambda e: e.error.event_id == "ev_get")
        assert err.error.code == "item_retrieve_invalid_item_id"

        # Order is [sys, b, a]: the model answers the last user item, "first question".
        await client.conn.response.create()
        done = await client.wait_for("response.done")
        assert {"first", "question"} <= set(words(done.response.output[0].content[0].transcript))
        await client.conn.conversation.item.delete(item_id="item_a")
        await client.wait_for("conversation.item.deleted")
        n = len(client.events)
        await client.conn.response.create()
        done = await client.wait_for("response.done", after=n)
        assert {"second", "question"} <= set(words(done.response.output[0].content[0].transcript))


async def test_manual_turn_in_g711(echo_server: Checked) -> None:
    """μ-law 8 kHz in, A-law 8 kHz out, turns ended by the client's commit."""
    async with connect(echo_server) as client:
        await client.conn.session.update(
            session={
                "type": "realtime",
                "audio": {
                    "input": {"format": {"type": "audio/pcmu"}, "turn_detection": None},
                    "output": {"format": {"type": "audio/pcma"}},
                },
            }
        )
        await client.wait_for("session.updated")
        await client.send({"type": "input_audio_buffer.commit", "event_id": "ev_empty"})
        err = await client.wait_for("error")
        assert err.error.code == "input_audio_buffer_commit_empty"
        speech = utterance("the blue car", rate=8000)
        ulaw = g711.encode(speech, "ulaw")
        for i in range(0, len(ulaw), 800):
            await client.conn.input_audio_buffer.append(
                audio=base64.b64encode(ulaw[i : i + 800]).decode()
            )
        await client.conn.input_audio_buffer.commit()
        await client.wait_for("input_audio_buffer.committed")
        await client.conn.response.create()
        done = await client.wait_for("response.done")
        alaw = b"".join(base64.b64decode(e.delta) for e in client.of("response.output_audio.delta"))
        pcm8k = g711.decode(alaw, "alaw", 8000)
        rs = Resampler(8000, 24000)
        up = AudioFrame.concat([f for f in (rs.push(pcm8k), rs.flush()) if f is not None])
        assert {"blue", "car"} <= set(words(hear(up.to_pcm16())))
        assert done.response.audio.output.format.type == "audio/pcma"
        assert not client.of("input_audio_buffer.speech_started")


async def test_out_of_band_response_leaves_the_conversation_alone(echo_server: Checked) -> None:
    async with connect(echo_server) as client:
        await client.conn.session.update(
            session={"type": "realtime", "audio": {"input": {"turn_detection": None}}}
        )
        await client.conn.conversation.item.create(item=text_item("the weather", "item_q"))
        await client.wait_for("conversation.item.done")
        n = len(client.events)
        await client.conn.response.create(
            response={
                "conversation": "none",
                "metadata": {"purpose": "summary"},
                "output_modalities": ["text"],
                "instructions": "Summarise.",
            }
        )
        done = await client.wait_for("response.done")
        assert done.response.metadata == {"purpose": "summary"}
        assert done.response.conversation_id is None
        assert done.response.output_modalities == ["text"]
        text = client.of("response.output_text.done")[0].text
        assert {"weather"} <= set(words(text))
        assert not client.of("response.output_audio.delta")
        after = [e.type for e in client.events[n:]]
        assert "conversation.item.added" not in after and "conversation.item.done" not in after
        oob_id = done.response.output[0].id
        await client.conn.conversation.item.retrieve(item_id=oob_id)
        err = await client.wait_for("error")
        assert err.error.code == "item_retrieve_invalid_item_id"


async def test_one_response_at_a_time_and_cancel(server: Checked) -> None:
    assert server.chat is not None
    gate = asyncio.Event()
    server.chat.script(Text("Let me think. "), Gate(gate), Text("Done."))
    async with connect(server) as client:
        await client.conn.session.update(
            session={"type": "realtime", "audio": {"input": {"turn_detection": None}}}
        )
        await client.conn.conversation.item.create(item=text_item("hello", "item_h"))
        await client.conn.response.create()
        created = await client.wait_for("response.created")
        await client.send({"type": "response.create", "event_id": "ev_second"})
        err = await client.wait_for("error")
        assert err.error.code == "conversation_already_has_active_response"
        assert err.error.event_id == "ev_second"
        await client.wait_for("response.output_audio.delta")
        await client.conn.response.cancel()
        done = await client.wait_for("response.done")
        assert done.response.id == created.response.id
        assert done.response.status == "cancelled"
        assert done.response.status_details.reason == "client_cancelled"
        assert done.response.output[0].status == "incomplete"
        await asyncio.wait_for(server.chat.requests[0].disconnected.wait(), 10)  # the LLM stopped
        await client.send({"type": "response.cancel", "event_id": "ev_c2"})
        err = await client.wait_for("error", lambda e: e.error.event_id == "ev_c2")
        assert err.error.code == "response_cancel_not_active"


async def test_truncate_keeps_only_the_words_heard(server: Checked) -> None:
    assert server.chat is not None
    server.chat.script(
        Text("The first sentence is short. The second sentence is a good deal longer.")
    )
    server.chat.script(Text("Okay."))
    async with connect(server) as client:
        await client.conn.session.update(
            session={"type": "realtime", "audio": {"input": {"turn_detection": None}}}
        )
        await client.conn.conversation.item.create(item=text_item("tell me", "item_t"))
        await client.conn.response.create()
        done = await client.wait_for("response.done")
        item_id = done.response.output[0].id
        # Where the second sentence starts: the audio sent before its transcript delta.
        played = 0
        for ev in client.events:
            if ev.type == "response.output_audio_transcript.delta" and "second" in ev.delta:
                break
            if ev.type == "response.output_audio.delta":
                played += len(base64.b64decode(ev.delta)) // 48  # ms of 24 kHz PCM16
        total = len(client.audio_of(done.response.id)) // 48
        assert 0 < played < total

        await client.send(
            {
                "type": "conversation.item.truncate",
                "event_id": "ev_far",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": total + 500,
            }
        )
        err = await client.wait_for("error", lambda e: e.error.event_id == "ev_far")
        assert err.error.code == "invalid_value" and err.error.param == "audio_end_ms"
        await client.send(
            {
                "type": "conversation.item.truncate",
                "event_id": "ev_unk",
                "item_id": "nope",
                "content_index": 0,
                "audio_end_ms": 10,
            }
        )
        err = await client.wait_for("error", lambda e: e.error.event_id == "ev_unk")
        assert err.error.code == "item_truncate_invalid_item_id"

        await client.conn.conversation.item.truncate(
            item_id=item_id, content_index=0, audio_end_ms=played + 20
        )
        cut = await client.wait_for("conversation.item.truncated")
        assert cut.audio_end_ms == played + 20
        await client.conn.conversation.item.retrieve(item_id=item_id)
        got = await client.wait_for("conversation.item.retrieved")
        assert got.item.content[0].transcript == "The first sentence is short."
        await client.conn.response.create()
        await client.wait_for("response.done", lambda e: e.response.id != done.response.id)
        history = server.chat.requests[1].body["messages"]
        assert history[-1] == {"role": "assistant", "content": "The first sentence is short."}


async def test_unsupported_content_gets_a_clear_error(echo_server: Checked) -> None:
    async with connect(echo_server) as client:
        image = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_image", "image_url": "data:image/png;base64,AAAA"}],
        }
        await client.send({"type": "conversation.item.create", "event_id": "ev_img", "item": image})
        err = await client.wait_for("error")
        assert err.error.code == "unsupported_feature" and "Image" in err.error.message
        await client.send({"type": "output_audio_buffer.clear", "event_id": "ev_oab"})
        err = await client.wait_for("error", lambda e: e.error.event_id == "ev_oab")
        assert err.error.code == "unsupported_feature"
        await client.send(
            {
                "type": "response.create",
                "event_id": "ev_in",
                "response": {"input": [text_item("x", "item_i")]},
            }
        )
        err = await client.wait_for("error", lambda e: e.error.event_id == "ev_in")
        assert err.error.param == "response.input"
        # The session is alive and still answers.
        await client.conn.conversation.item.create(item=text_item("still here", "item_s"))
        await client.wait_for("conversation.item.added")


async def test_keys_are_checked(echo_server: Checked) -> None:
    with pytest.raises(Exception, match="401"):
        async with connect(echo_server, api_key="sk-wrong"):
            pass
    async with connect(echo_server, api_key="sk-second-key") as client:
        await client.wait_for("session.created")
    async with aiohttp.ClientSession() as http:
        url = echo_server.url.replace("http", "ws") + "/realtime?model=m"
        with pytest.raises(aiohttp.WSServerHandshakeError) as no_key:
            await http.ws_connect(url)
        assert no_key.value.status == 401
        # Browsers send the key as a subprotocol, as with the service.
        ws = await http.ws_connect(
            url, protocols=("realtime", f"openai-insecure-api-key.{API_KEY}")
        )
        first = json.loads((await ws.receive()).data)
        assert first["type"] == "session.created"
        await ws.close()
