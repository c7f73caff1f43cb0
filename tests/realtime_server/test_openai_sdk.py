"""The openai SDK's own realtime client holds a spoken conversation with the server."""

from __future__ import annotations

import json

from ..cascade.chat_server import Call, Text
from .conftest import Checked
from .helpers import connect, hear, utterance, words

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


async def test_offline_default_answers_a_spoken_question(echo_server: Checked) -> None:
    """Whisper hears, the echo model answers, Piper speaks; Whisper hears the reply."""
    async with connect(echo_server) as client:
        await client.wait_for("session.created")
        await client.conn.session.update(
            session={
                "type": "realtime",
                "audio": {"input": {"transcription": {"model": "whisper-1"}}},
            }
        )
        await client.wait_for("session.updated")
        await client.say(utterance("what is the weather in paris"))
        started = await client.wait_for("input_audio_buffer.speech_started")
        committed = await client.wait_for("input_audio_buffer.committed")
        assert committed.item_id == started.item_id
        heard = await client.wait_for("conversation.item.input_audio_transcription.completed")
        assert heard.item_id == committed.item_id
        assert {"weather", "paris"} <= set(words(heard.transcript))
        done = await client.wait_for("response.done")
        assert done.response.status == "completed"
        reply = hear(client.audio_of(done.response.id))
        assert {"said", "weather", "paris"} <= set(words(reply)), reply
        transcript = client.of("response.output_audio_transcript.done")[0].transcript
        assert {"weather", "paris"} <= set(words(transcript))
        assert done.response.usage.total_tokens > 0


async def test_spoken_conversation_with_a_tool_call(server: Checked) -> None:
    chat = server.chat
    assert chat is not None
    chat.script(Call("get_weather", '{"city": "Paris"}'))
    chat.script(Text("It is sunny in Paris today."))
    chat.script(Text("You are welcome, goodbye."))
    async with connect(server) as client:
        await client.conn.session.update(
            session={
                "type": "realtime",
                "instructions": "You tell the weather.",
                "tools": [WEATHER_TOOL],
                "tool_choice": "auto",
                "audio": {"input": {"transcription": {"model": "whisper-1"}}},
            }
        )
        await client.wait_for("session.updated")
        await client.say(utterance("what is the weather in paris"))
        args = await client.wait_for("response.function_call_arguments.done")
        assert args.name == "get_weather" and json.loads(args.arguments) == {"city": "Paris"}
        first = await client.wait_for("response.done")
        assert [o.type for o in first.response.output] == ["function_call"]
        n = len(client.events)
        await client.conn.conversation.item.create(
            item={"type": "function_call_output", "call_id": args.call_id, "output": "sunny, 24 C"}
        )
        await client.conn.response.create()
        second = await client.wait_for("response.done", after=n)
        assert second.response.status == "completed"
        assert {"sunny", "paris"} <= set(words(hear(client.audio_of(second.response.id))))

        # The model saw the spoken question, its own call and the tool's output.
        messages = chat.requests[1].body["messages"]
        assert messages[0] == {"role": "system", "content": "You tell the weather."}
        assert {"weather", "paris"} <= set(words(messages[1]["content"]))
        assert messages[2]["tool_calls"][0]["function"]["name"] == "get_weather"
        assert messages[3] == {
            "role": "tool",
            "tool_call_id": args.call_id,
            "content": "sunny, 24 C",
        }
        assert chat.requests[0].body["tools"][0]["function"]["name"] == "get_weather"

        # A second spoken turn: the model remembers the whole call.
        n = len(client.events)
        await client.say(utterance("thank you"))
        third = await client.wait_for("response.done", after=n)
        assert {"welcome", "goodbye"} <= set(words(hear(client.audio_of(third.response.id))))
        history = chat.requests[2].body["messages"]
        assert history[4] == {"role": "assistant", "content": "It is sunny in Paris today."}
        assert {"thank"} <= set(words(history[5]["content"]))


async def test_beta_dialect_turn(echo_server: Checked) -> None:
    """``OpenAI-Beta: realtime=v1`` gets the beta names and flat session."""
    async with connect(echo_server, beta=True) as client:
        created = await client.wait_for("session.created")
        assert created.session.input_audio_format == "pcm16"
        await client.wait_for("conversation.created")
        await client.conn.session.update(
            session={"turn_detection": None, "input_audio_transcription": {"model": "whisper-1"}}
        )
        await client.wait_for("session.updated")
        await client.say(utterance("good morning"))
        await client.conn.input_audio_buffer.commit()
        committed = await client.wait_for("input_audio_buffer.committed")
        await client.wait_for("conversation.item.created", lambda e: e.item.id == committed.item_id)
        await client.conn.response.create()
        done = await client.wait_for("response.done")
        audio = client.audio_of(done.response.id, "response.audio.delta")
        assert {"good", "morning"} <= set(words(hear(audio)))
        assert client.of("response.audio_transcript.done")
        assert not client.of("input_audio_buffer.speech_started")  # manual turns: no VAD
