"""The rest of the BackendSession surface: commit, clear, config updates, transcript failure."""

from __future__ import annotations

import pytest

from duplex.agents.backend import ItemAdded, UserTranscript
from duplex.agents.conversation import AudioPart, Conversation, Message
from duplex.agents.errors import BackendErrorException
from duplex.agents.tools import build_tool, function_tool

from ..speech import speak
from .helpers import Collector, backend, say, utterance
from .server import FailedTranscript, RealtimeTestServer


@function_tool
def lookup(city: str) -> str:
    """Look a city up. city: its name."""
    return city


async def test_commit_in_local_turn_mode(server: RealtimeTestServer) -> None:
    server.transcripts.append("hello there")
    session = await backend(server, turn_detection=None).connect(
        instructions="x", tools=[], conversation=Conversation()
    )
    col = Collector(session)
    with pytest.raises(BackendErrorException) as e:
        await session.commit_audio()  # nothing pushed: refused before sending
    assert e.value.code == "input_audio_buffer_commit_empty"
    await say(session, speak("hello there", 24000))
    await session.commit_audio()  # settled by input_audio_buffer.committed
    added = await col.wait_for(ItemAdded)
    assert isinstance(added.item, Message) and added.item.role == "user"
    part = added.item.content[0]
    assert isinstance(part, AudioPart) and part.duration_ms == pytest.approx(
        speak("hello there", 24000).duration_ms, abs=1
    )
    final = await col.wait_for(UserTranscript, lambda t: t.final)
    assert final.text == "hello there"
    assert server.current.responses == []  # no server VAD: no reply on its own
    await session.aclose()
    await col.aclose()


async def test_a_too_short_commit_fails_with_the_server_code(server: RealtimeTestServer) -> None:
    session = await backend(server, turn_detection=None).connect(
        instructions="x", tools=[], conversation=Conversation()
    )
    await say(session, speak("hi", 24000).slice(0, 24000 * 40 // 1000))
    with pytest.raises(BackendErrorException) as e:
        await session.commit_audio()
    assert e.value.code == "input_audio_buffer_commit_empty"
    await session.aclose()


async def test_clear_audio_drops_the_buffer(server: RealtimeTestServer) -> None:
    session = await backend(server, turn_detection=None).connect(
        instructions="x", tools=[], conversation=Conversation()
    )
    await say(session, speak("forget this", 24000))
    await session.clear_audio()
    await server.wait_until(lambda: bool(server.of_type("input_audio_buffer.clear")))
    assert server.current.buffer_ms == 0
    with pytest.raises(BackendErrorException):
        await session.commit_audio()
    await session.aclose()


async def test_instructions_and_tools_updates_are_acknowledged(server: RealtimeTestServer) -> None:
    session = await backend(server).connect(
        instructions="old", tools=[], conversation=Conversation()
    )
    await session.update_instructions("You are a pirate.")
    assert server.current.session["instructions"] == "You are a pirate."
    await session.update_tools([build_tool(lookup)])
    tools = server.current.session["tools"]
    assert [t["name"] for t in tools] == ["lookup"] and tools[0]["type"] == "function"
    assert server.current.session["audio"]["output"]["voice"] == "marin"  # partial updates
    server.fail_next["session.update"] = ("invalid_value", "Invalid value: 'x'")
    with pytest.raises(BackendErrorException) as e:
        await session.update_instructions("x")
    assert e.value.code == "invalid_value"
    await session.aclose()


async def test_a_refused_session_config_fails_connect(server: RealtimeTestServer) -> None:
    server.fail_next["session.update"] = ("invalid_model", "Model 'nope' does not exist")
    with pytest.raises(BackendErrorException) as e:
        await backend(server).connect(instructions="x", tools=[], conversation=Conversation())
    assert e.value.code == "invalid_model"


async def test_failed_transcription_is_surfaced(server: RealtimeTestServer) -> None:
    server.transcripts.append(FailedTranscript("audio unintelligible", partial="what is"))
    session = await backend(server).connect(instructions="x", tools=[], conversation=Conversation())
    col = Collector(session)
    await say(session, utterance())
    final = await col.wait_for(UserTranscript, lambda t: t.final)
    assert final.error == "audio unintelligible" and final.text == "what is"
    user = col.conversation.items[0]
    assert isinstance(user, Message) and user.complete and user.text == "what is"
    await session.aclose()
    await col.aclose()


async def test_audio_at_another_rate_is_resampled(server: RealtimeTestServer) -> None:
    session = await backend(server, turn_detection=None).connect(
        instructions="x", tools=[], conversation=Conversation()
    )
    audio = speak("one two three", 48000)
    await say(session, audio)
    await session.commit_audio()
    await server.wait_until(lambda: bool(server.current.items))
    # what reached the server is 24 kHz audio of the same length (within the filter delay)
    sent_ms = (
        sum(len(e["audio"]) * 3 // 4 for e in server.of_type("input_audio_buffer.append")) / 48
    )
    assert abs(sent_ms - audio.duration_ms) < 30
    await session.aclose()
