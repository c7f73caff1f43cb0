"""A spoken turn end to end over the wire: server VAD, transcripts, reply audio, mirror."""

from __future__ import annotations

import base64

import pytest

from duplex.agents.backend import (
    AudioDelta,
    ItemAdded,
    ItemUpdated,
    ResponseDone,
    ResponseStarted,
    SpeechStarted,
    SpeechStopped,
    TextDelta,
    UserTranscript,
)
from duplex.agents.conversation import AudioPart, Conversation, Message, diff

from .helpers import Collector, backend, say, utterance
from .server import RealtimeTestServer, Reply


@pytest.mark.parametrize(
    ("dialect", "fmt"),
    [("ga", "pcm16"), ("beta", "pcm16"), ("ga", "g711_ulaw"), ("beta", "g711_alaw")],
)
async def test_spoken_turn_server_vad(server: RealtimeTestServer, dialect: str, fmt: str) -> None:
    server.transcripts.append("what is the weather in paris")
    server.replies.append(Reply(text="It is sunny in Paris today.", audio_ms=700))
    b = backend(server, dialect=dialect, input_audio_format=fmt, output_audio_format=fmt)
    rate = b.capabilities.input_sample_rate
    assert rate == b.capabilities.output_sample_rate == (24000 if fmt == "pcm16" else 8000)
    session = await b.connect(instructions="Be brief.", tools=[], conversation=Conversation())
    assert server.current.dialect == dialect
    assert server.current.input_format == server.current.output_format == fmt
    col = Collector(session)
    await say(session, utterance(rate=rate))
    done = await col.wait_for(ResponseDone)

    kinds = [type(e) for e in col.events]
    assert kinds.index(SpeechStarted) < kinds.index(SpeechStopped) < kinds.index(ResponseStarted)
    started = col.of(ResponseStarted)[0]
    assert started.request_id is None  # the server answered on its own (create_response)
    assert done.status == "completed" and done.usage is not None and done.usage.output_tokens > 0

    # caller transcript: partials, then the final one, and the item carries it
    finals = [t for t in col.of(UserTranscript) if t.final]
    assert finals and finals[0].text == "what is the weather in paris"
    assert any(not t.final for t in col.of(UserTranscript))
    user = col.conversation.items[0]
    assert isinstance(user, Message) and user.role == "user" and user.complete
    assert user.text == "what is the weather in paris"
    assert user.audio_ms > 500  # the duration of the committed speech

    # reply: audio frames at 24 kHz adding up to what the server sent, transcript deltas
    audio = col.of(AudioDelta)
    assert sum(a.frame.duration_ms for a in audio) == 700
    assert all(a.frame.sample_rate == rate for a in audio)
    assert "".join(t.text for t in col.of(TextDelta)) == "It is sunny in Paris today."
    reply = col.conversation.items[1]
    assert isinstance(reply, Message) and reply.role == "assistant" and reply.complete
    assert reply.text == "It is sunny in Paris today."
    assert isinstance(reply.content[0], AudioPart) and reply.content[0].duration_ms == 700

    # the session's conversation equals the mirror, object for object, and the server's
    assert diff(session.remote_items, col.conversation.items) == []
    assert all(a is b for a, b in zip(session.remote_items, col.conversation.items, strict=True))
    assert [it["id"] for it in server.current.items] == [it.id for it in col.conversation]
    assert len(col.of(ItemAdded)) == 2 and len(col.of(ItemUpdated)) >= 2
    # the beta dialect announced itself with the header, and used its own names
    beta_header = server.handshakes[-1]["headers"].get("OpenAI-Beta")
    assert beta_header == ("realtime=v1" if dialect == "beta" else None)
    sent_types = {e["type"] for _, e in server.sent}
    assert ("response.audio.delta" in sent_types) == (dialect == "beta")
    # wire hygiene: every append is at most 60 ms (one 20 ms frame, more only while the
    # loop is behind), and every client event had an event_id
    bytes_per_ms = rate * (2 if fmt == "pcm16" else 1) / 1000

    def pushed_ms() -> float:
        appends = server.of_type("input_audio_buffer.append")
        return sum(len(base64.b64decode(e["audio"])) for e in appends) / bytes_per_ms

    # no audio replaced or dropped (a frame merged while the loop was behind may be on its way)
    expected_ms = utterance(rate=rate).duration_ms
    await server.wait_until(lambda: pushed_ms() > expected_ms - 1, 5.0)
    assert abs(pushed_ms() - expected_ms) < 1
    appends = server.of_type("input_audio_buffer.append")
    assert appends and all(len(base64.b64decode(e["audio"])) <= 60 * bytes_per_ms for e in appends)
    assert all(isinstance(e.get("event_id"), str) for _, e in server.received)
    assert sum(server.errors_sent.values()) == 0
    await session.aclose()
    await col.aclose()
