"""CascadeBackend through the BackendSession interface: real Whisper, real Piper, scripted LLM."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest

from duplex.agents.backend import (
    AudioDelta,
    BackendError,
    FunctionCallRequested,
    ItemAdded,
    ItemDeleted,
    ItemUpdated,
    ResponseStarted,
    TextDelta,
    UserTranscript,
)
from duplex.agents.conversation import Conversation, FunctionCall, FunctionCallOutput, Message
from duplex.agents.tools import build_tool
from duplex.backends.cascade import CascadeBackend, CascadeSession, ChatCompletionsLLM
from duplex.plugins.piper import PiperTTS
from duplex.plugins.whisper import WhisperSTT

from ..speech import concat, silence, speak, split
from .chat_server import Call, ChatServer, Gate, Text
from .helpers import EventLog, hear, say, words
from .vllm_server import Transcriber

WEATHER = "What is the weather in Paris today?"
INSTRUCTIONS = "You are a weather bot."


def get_weather(city: str) -> str:
    """Weather for a city. city: the city name."""
    return f"sunny in {city}"


class Call_:
    """A connected cascade session with its event log."""

    def __init__(self, session: CascadeSession, log: EventLog, conv: Conversation) -> None:
        self.session, self.log, self.conv = session, log, conv
        self._applied = 0

    def apply(self) -> None:
        """Mirror the item events not applied yet into the local conversation, as
        AgentSession does."""
        for ev in self.log.events[self._applied :]:
            if isinstance(ev, (ItemAdded, ItemUpdated, ItemDeleted)):
                self.conv.apply(ev)
        self._applied = len(self.log.events)


@pytest.fixture
async def call(
    chat_server: ChatServer, whisper_stt: WhisperSTT, piper: PiperTTS
) -> AsyncIterator[Call_]:
    llm = ChatCompletionsLLM(chat_server.url, "Qwen/Qwen3-8B")
    backend = CascadeBackend(whisper_stt, llm, piper)
    assert backend.capabilities.input_sample_rate == 16000
    assert backend.capabilities.output_sample_rate == 22050
    assert not backend.capabilities.server_vad and backend.capabilities.truncation
    session = await backend.connect(
        instructions=INSTRUCTIONS, tools=[build_tool(get_weather)], conversation=Conversation()
    )
    log = EventLog(session)
    yield Call_(session, log, Conversation())
    await session.aclose()
    await log.aclose()
    await llm.aclose()


def reply_events(log: EventLog, response_id: str) -> list[object]:
    return [e for e in log.events if getattr(e, "response_id", None) == response_id]


async def test_a_turn_is_heard_answered_and_spoken_before_the_llm_finishes(
    call: Call_, chat_server: ChatServer, transcriber: Transcriber
) -> None:
    gate = asyncio.Event()
    chat_server.script(
        Text("The weather in Paris "), Text("is sunny. "), Gate(gate), Text("Anything else?")
    )
    s, log = call.session, call.log
    for frame in split(speak(WEATHER), 20):  # speech streams to the STT while "spoken"
        await s.push_audio(frame)
    await log.wait_for(UserTranscript, lambda e: not e.final and "paris" in words(e.text))
    for frame in split(silence(0.5), 20):  # the VAD's trailing silence
        await s.push_audio(frame)
    t0 = time.perf_counter()
    await s.commit_audio()
    handle = await s.create_response()
    user = await log.wait_for(
        ItemAdded, lambda e: isinstance(e.item, Message) and e.item.role == "user"
    )
    stt_ms = 1000 * (time.perf_counter() - t0)
    assert {"weather", "paris"} <= set(words(user.item.text))
    first = await log.wait_for(AudioDelta)
    ttfa_ms = 1000 * (time.perf_counter() - t0)
    assert not chat_server.requests[0].finished.is_set()  # the model is still "writing"
    gate.set()
    done = await asyncio.wait_for(handle.done, 20)
    print(f"\ncascade: STT final {stt_ms:.0f} ms, first audio {ttfa_ms:.0f} ms after commit")
    assert done.status == "completed" and done.usage is not None and done.usage.output_tokens == 7
    rid = await handle.created
    evs = reply_events(log, rid)
    assert isinstance(evs[0], ResponseStarted) and evs[0].request_id == handle.request_id
    assert [e.text for e in evs if isinstance(e, TextDelta)] == [
        "The weather in Paris is sunny.",
        " Anything else?",
    ]
    final = [e.item for e in log.of(ItemUpdated) if e.item.id == first.item_id][-1]
    assert isinstance(final, Message) and final.complete and final.role == "assistant"
    assert final.text == "The weather in Paris is sunny. Anything else?"
    audio = log.audio(rid)
    assert abs(final.audio_ms - audio.duration_ms) < 1 and audio.sample_rate == 22050
    assert {"sunny", "anything"} <= set(words(hear(transcriber, [audio])))
    sent = chat_server.requests[0].body["messages"]
    assert sent[0] == {"role": "system", "content": INSTRUCTIONS}
    assert sent[1]["role"] == "user" and "paris" in words(sent[1]["content"])
    assert chat_server.requests[0].body["tools"][0]["function"]["name"] == "get_weather"
    assert [it.id for it in s.conversation] == [user.item.id, final.id]


async def test_tool_call_then_follow_up_reply(
    call: Call_, chat_server: ChatServer, transcriber: Transcriber
) -> None:
    chat_server.script(Text("Let me check. "), Call("get_weather", json.dumps({"city": "Paris"})))
    chat_server.script(Text("It is sunny in Paris."))
    s, log = call.session, call.log
    await say(s, concat(speak(WEATHER), silence(0.3)))
    first = await (await s.create_response()).done
    assert first.status == "completed"
    req = await log.wait_for(FunctionCallRequested)
    assert (req.name, json.loads(req.arguments)) == ("get_weather", {"city": "Paris"})
    added = [e.item for e in log.of(ItemAdded)]
    assert [type(i).__name__ for i in added] == ["Message", "Message", "FunctionCall"]
    assert added[2].id == req.item_id
    # The session's part: run the tool, append its output, sync, ask for the follow-up.
    call.apply()
    tool = build_tool(get_weather)
    result = await tool.invoke(tool.validate(req.arguments))
    call.conv.append(FunctionCallOutput(req.call_id, str(result), name=req.name))
    await s.sync(call.conv)
    handle = await s.create_response()
    follow = await handle.done
    assert follow.status == "completed"
    sent = chat_server.requests[1].body["messages"]
    assert sent[2]["role"] == "assistant" and sent[2]["content"] == "Let me check."
    assert sent[2]["tool_calls"][0]["id"] == req.call_id
    assert sent[3] == {"role": "tool", "tool_call_id": req.call_id, "content": "sunny in Paris"}
    assert {"sunny", "paris"} <= set(words(hear(transcriber, [log.audio(follow.response_id)])))
    call.apply()
    assert list(s.conversation) == list(call.conv)  # the mirror is the session's conversation


async def test_truncate_keeps_only_the_words_heard(call: Call_, chat_server: ChatServer) -> None:
    chat_server.script(
        Text("The first sentence is short. The second sentence has eight words in it.")
    )
    s, log = call.session, call.log
    await say(s, concat(speak(WEATHER), silence(0.3)))
    done = await (await s.create_response()).done
    deltas = log.of(AudioDelta)
    item_id = deltas[0].item_id
    # Where sentence two starts: the audio before its TextDelta.
    second_at = log.events.index(log.of(TextDelta)[1])
    first_ms = sum(e.frame.duration_ms for e in log.events[:second_at] if isinstance(e, AudioDelta))
    total_ms = sum(e.frame.duration_ms for e in deltas if e.response_id == done.response_id)
    cut = int(first_ms + (total_ms - first_ms) * 0.55)  # 55% of eight words: four
    await s.truncate(item_id, cut)
    item = (await log.wait_for(ItemUpdated, lambda e: e.item.truncated_ms is not None)).item
    assert isinstance(item, Message) and item.truncated_ms == cut and item.audio_ms == cut
    assert item.text == "The first sentence is short. The second sentence has"
    assert s.conversation.get(item_id) == item


async def test_caller_interrupts_a_slow_llm(call: Call_, chat_server: ChatServer) -> None:
    never = asyncio.Event()
    chat_server.script(
        Text("Here is the first part of a long answer. "), Gate(never), Text("Unheard.")
    )
    chat_server.script(Text("Sure, go ahead."))
    s, log = call.session, call.log
    await say(s, concat(speak(WEATHER), silence(0.3)))
    handle = await s.create_response()
    first = await log.wait_for(AudioDelta)
    await s.cancel_response()  # the caller barged in
    done = await asyncio.wait_for(handle.done, 5)
    assert done.status == "cancelled"
    await asyncio.wait_for(chat_server.requests[0].disconnected.wait(), 5)  # LLM stream closed
    spoken = [e.item for e in log.of(ItemUpdated) if e.item.id == first.item_id][-1]
    assert spoken.text == "Here is the first part of a long answer."  # never "Unheard."
    await s.truncate(first.item_id, 600)  # the caller heard 600 ms of it
    heard = s.conversation.get(first.item_id)
    assert isinstance(heard, Message) and heard.truncated_ms == 600
    assert 0 < len(heard.text.split()) < 9 and "answer" not in heard.text
    # The call goes on: the next turn is answered and the model sees only what was heard.
    await say(s, concat(speak("Tell me a joke."), silence(0.3)))
    assert (await (await s.create_response()).done).status == "completed"
    sent = chat_server.requests[1].body["messages"]
    assert sent[2] == {"role": "assistant", "content": heard.text}


async def test_llm_stream_cut_mid_tool_call_fails_the_reply_not_the_call(
    call: Call_, chat_server: ChatServer
) -> None:
    from .chat_server import Cut

    chat_server.script(
        Text("Checking now. "), Call("get_weather", '{"city": "Paris"}', parts=4), Cut()
    )
    chat_server.script(Text("Sorry, something broke."))
    s, log = call.session, call.log
    await say(s, concat(speak(WEATHER), silence(0.3)))
    done = await (await s.create_response()).done
    assert done.status == "failed" and "mid-tool-call" in (done.error or "")
    err = await log.wait_for(BackendError)
    assert err.code == "llm_stream_cut" and err.recoverable
    assert not log.of(FunctionCallRequested)  # a half call is never run
    assert [type(i).__name__ for i in s.conversation] == ["Message", "Message"]
    assert s.conversation.items[1].text == "Checking now."  # what was spoken stays
    assert (await (await s.create_response()).done).status == "completed"


async def test_silence_only_turn_adds_nothing_and_skips_the_llm(
    call: Call_, chat_server: ChatServer
) -> None:
    s, log = call.session, call.log
    await say(s, silence(0.8))
    done = await (await s.create_response()).done
    assert (done.status, done.reason) == ("cancelled", "no_input")
    assert len(s.conversation) == 0 and not chat_server.requests
    assert (await log.wait_for(UserTranscript)).final


async def test_sync_adopts_edits_and_the_llm_sees_them(
    call: Call_, chat_server: ChatServer
) -> None:
    s = call.session
    edited = Conversation(
        [
            Message.text_message("user", "My name is Ada."),
            Message.text_message("assistant", "Hello Ada."),
            FunctionCall("c9", "get_weather", '{"city": "Oslo"}'),
            FunctionCallOutput("c9", "snow"),
        ]
    )
    await s.sync(edited)
    assert list(s.conversation) == list(edited)
    edited.remove(edited.items[1].id)
    await s.sync(edited)
    await (await s.create_response(instructions="Answer in French.", tool_choice="none")).done
    body = chat_server.requests[0].body
    assert body["messages"][0] == {"role": "system", "content": "Answer in French."}
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "tool"]
    assert "tools" not in body  # tool_choice none: no tools offered
