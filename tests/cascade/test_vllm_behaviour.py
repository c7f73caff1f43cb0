"""The foundation's behaviour list through `AgentSession` with `VLLMRealtime` on the wire.

Every stage is a real peer: the caller's espeak-ng speech goes through the session's
VAD and resampler to a vLLM-protocol ``/v1/realtime`` server that transcribes it with
Whisper, the reply comes from a scripted vLLM-shaped chat server (which records every
request, so a test can read exactly what the LLM was given), and Piper speaks it from a
speech server. The manual playout clock fixes how much of a reply the caller heard.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import numpy as np
import pytest

from duplex.agents import (
    Agent,
    AgentInterrupted,
    AgentSession,
    AgentTranscribed,
    AudioFrame,
    ConfigurationError,
    ConversationItemAdded,
    FunctionCallOutput,
    Message,
    MetricsCollected,
    ResponseActiveError,
    SessionError,
    ToolCalled,
    ToolExecuted,
    TurnOptions,
    UserTranscribed,
    function_tool,
)
from duplex.agents.testing import MemoryTransport
from duplex.agents.testing.memory import PlayoutMode
from duplex.backends.cascade.messages import MISSING_OUTPUT
from duplex.backends.vllm import VLLMRealtime
from duplex.plugins.webrtcvad import WebRTCVAD

from ..speech import speak
from .chat_server import Call, ChatServer, Gate, Text
from .helpers import words
from .speech_server import SpeechServer
from .vllm_server import VLLMRealtimeServer

T = TypeVar("T")
STT_MODEL = "mistralai/Voxtral-Mini-4B-Realtime-2602"
TURN = TurnOptions(prefix_padding_ms=200, silence_duration_ms=500, min_speech_ms=100)
END_OF_TURN_MS = 700  # silence after speech that ends the caller's turn
FRAME_MS = 20.0  # the transport's playout frame


class Desk(Agent):
    instructions = "You run a help desk."

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()  # releases slow_lookup
        self.signal = asyncio.Event()  # set by send_signal, awaited by wait_for_signal
        self.orders: list[str] = []

    @function_tool
    async def slow_lookup(self, code: str) -> str:
        """Look up a ticket. code: the ticket code."""
        await self.gate.wait()
        return f"ticket {code} is open"

    @function_tool
    async def wait_for_signal(self) -> str:
        """Wait until the signal is sent."""
        await self.signal.wait()  # returns only if send_signal runs while this one waits
        return "signal received"

    @function_tool
    async def send_signal(self) -> str:
        """Send the signal."""
        self.signal.set()
        return "signal sent"

    @function_tool
    async def place_order(self, product: str, quantity: int) -> str:
        """Order a product. product: what to order. quantity: how many."""
        self.orders.append(f"{quantity}x {product}")
        return f"ordered {quantity} {product}"

    @function_tool
    def broken(self) -> str:
        """A tool whose database is down."""
        raise RuntimeError("database is down")


@pytest.fixture
async def backend(
    vllm_server: VLLMRealtimeServer, chat_server: ChatServer, speech_server: SpeechServer
) -> AsyncIterator[VLLMRealtime]:
    b = VLLMRealtime(
        "http://127.0.0.1:1",  # the shared base; each stage below points at its own server
        STT_MODEL,
        "Qwen/Qwen3-8B",
        stt_url=vllm_server.url,
        llm_url=chat_server.url,
        tts_url=speech_server.url,
        tts_transport="websocket",
    )
    yield b
    await b.aclose()


async def start(
    backend: VLLMRealtime,
    agent: Agent | None = None,
    *,
    playout: PlayoutMode = "auto",
    input_channels: int = 1,
    **options: Any,
) -> tuple[AgentSession, MemoryTransport]:
    transport = MemoryTransport(
        input_rate=48000, input_channels=input_channels, output_rate=48000, playout=playout
    )
    session = AgentSession(
        agent=agent or Desk(), backend=backend, vad=WebRTCVAD(mode=2), turn=TURN, **options
    )
    await session.start(transport)
    return session, transport


async def within(awaitable: Awaitable[T], timeout: float = 20.0) -> T:
    return await asyncio.wait_for(awaitable, timeout)


def say(transport: MemoryTransport, text: str, *, end_turn: bool = True) -> AudioFrame:
    """The caller speaks (48 kHz, like a browser); ``end_turn`` adds the silence that ends it."""
    speech = speak(text, 48000)
    inp = transport.audio_input
    if inp.channels > 1:
        speech = AudioFrame(np.repeat(speech.data, inp.channels, axis=1), 48000, inp.channels)
    transport.push(speech)
    if end_turn:
        transport.push_silence(END_OF_TURN_MS)
    return speech


def final_reply(word: str) -> Any:
    return lambda e: e.final and word in words(e.text)


def assistants(session: AgentSession) -> list[Message]:
    return [m for m in session.conversation if isinstance(m, Message) and m.role == "assistant"]


def tool_messages(chat_server: ChatServer, request: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = chat_server.requests[request].body["messages"]
    return [m for m in messages if m["role"] == "tool"]


def pcm_ms(speech_server: SpeechServer, n: int) -> float:
    """Duration of the n-th sentence the speech server sent."""
    return speech_server.log.sent[n] / 2 / speech_server.rate * 1000


# --- 1. a full spoken turn --------------------------------------------------------------------
async def test_full_spoken_turn(
    backend: VLLMRealtime,
    vllm_server: VLLMRealtimeServer,
    chat_server: ChatServer,
    speech_server: SpeechServer,
) -> None:
    chat_server.script(Text("It is sunny in Paris today."))
    session, transport = await start(backend)
    try:
        heard = session.next_event(UserTranscribed, lambda e: e.final)
        metrics = session.next_event(MetricsCollected)
        say(transport, "What is the weather in Paris?")
        user_text = (await within(heard)).text
        assert {"weather", "paris"} <= set(words(user_text))  # Whisper's transcript
        m = (await within(metrics)).metrics
        assert m.status == "completed" and not m.interrupted
        assert m.end_to_end_ms is not None and m.backend_ttfa_ms is not None
        assert m.input_tokens == 42 and m.output_tokens == 7  # the chat server's usage chunk
        # The LLM got exactly the caller's transcribed words as the user message.
        sent = chat_server.requests[0].body["messages"]
        assert sent[0] == {"role": "system", "content": "You run a help desk."}
        assert sent[-1] == {"role": "user", "content": user_text}
        assert len(vllm_server.connections[0].generations) == 1
        user, reply = session.conversation.items
        assert isinstance(user, Message) and user.role == "user" and user.text == user_text
        assert isinstance(reply, Message) and reply.text == "It is sunny in Paris today."
        # Every millisecond the speech server synthesized was played, at the transport's rate.
        assert transport.output.audio().sample_rate == 48000  # type: ignore[union-attr]
        assert transport.output.played_ms == pytest.approx(pcm_ms(speech_server, 0), abs=FRAME_MS)
        assert reply.audio_ms == pytest.approx(transport.output.played_ms, abs=FRAME_MS)
        assert m.played_ms == pytest.approx(transport.output.played_ms, abs=FRAME_MS)
    finally:
        await session.aclose()


# --- 2. barge-in --------------------------------------------------------------------------
async def test_barge_in_truncates_the_reply_to_what_was_played(
    backend: VLLMRealtime, chat_server: ChatServer, speech_server: SpeechServer
) -> None:
    first = "Sure thing."
    second = "Here is a much longer second sentence about the weather in Paris and London."
    held = asyncio.Event()  # never set: the model is still "writing" when the caller cuts in
    chat_server.script(Text(first + " "), Text(second + " "), Gate(held), Text("Unheard."))
    chat_server.script(Text("Of course."))
    session, transport = await start(backend, playout="manual")
    try:
        both_spoken = session.next_event(AgentTranscribed, lambda e: "London." in e.text)

        def is_cut(item_id: str) -> bool:
            item = session.conversation.get(item_id)
            return isinstance(item, Message) and item.truncated_ms is not None

        say(transport, "Tell me about the weather.")
        await within(both_spoken)  # both sentences synthesized; their lengths are known
        d1, d2 = pcm_ms(speech_server, 0), pcm_ms(speech_server, 1)
        played = await transport.output.play(d1 + d2 / 2)  # all of one, half of the other
        interrupted = session.next_event(AgentInterrupted)
        cut_done = session.next_event(AgentTranscribed, lambda e: e.final and is_cut(e.item_id))
        say(transport, "Stop please.", end_turn=False)
        ev = await within(interrupted)
        assert ev.played_ms == pytest.approx(played, abs=1)
        await within(chat_server.requests[0].disconnected.wait())  # the LLM stream was closed
        await within(cut_done)
        (cut,) = assistants(session)
        assert cut.id == ev.item_id
        assert cut.truncated_ms == pytest.approx(played, abs=FRAME_MS)
        # The words heard: the whole first sentence and the played share of the second.
        share = (played - d1) / d2
        expected = len(first.split()) + int(len(second.split()) * share)
        assert cut.text.split() == (first + " " + second).split()[: len(cut.text.split())]
        assert abs(len(cut.text.split()) - expected) <= 1
        assert "London" not in cut.text and "Unheard" not in cut.text
        # The next turn's LLM request holds only what the caller heard.
        answered = session.next_event(AgentTranscribed, final_reply("course"))
        transport.push_silence(END_OF_TURN_MS)
        await within(answered)
        sent = chat_server.requests[1].body["messages"]
        assert [m for m in sent if m["role"] == "assistant"] == [
            {"role": "assistant", "content": cut.text}
        ]
        assert {"stop", "please"} <= set(words(sent[-1]["content"]))
    finally:
        await session.aclose()


async def test_barge_in_before_any_audio_deletes_the_reply(
    backend: VLLMRealtime, chat_server: ChatServer
) -> None:
    held = asyncio.Event()
    chat_server.script(Text("Hello there, this is a rather long answer. "), Gate(held))
    chat_server.script(Text("Of course."))
    session, transport = await start(backend, playout="manual")
    try:
        added = session.next_event(
            ConversationItemAdded,
            lambda e: isinstance(e.item, Message) and e.item.role == "assistant",
        )
        spoken = session.next_event(AgentTranscribed, lambda e: "answer." in e.text)
        say(transport, "Tell me about the weather.")
        item_id = (await within(added)).item.id
        await within(spoken)  # its audio waits in the playout; the clock never moved
        interrupted = session.next_event(AgentInterrupted)
        say(transport, "Stop please.", end_turn=False)
        assert (await within(interrupted)).played_ms == 0
        assert transport.output.played_ms == 0
        await within(chat_server.requests[0].disconnected.wait())
        answered = session.next_event(AgentTranscribed, final_reply("course"))
        transport.push_silence(END_OF_TURN_MS)
        await within(answered)
        assert item_id not in session.conversation
        assert item_id not in session.backend_session.conversation  # type: ignore[attr-defined]
        # The LLM never sees a reply the caller did not hear.
        sent = chat_server.requests[1].body["messages"]
        assert [m["role"] for m in sent] == ["system", "user", "user"]
        assert not any("answer" in (m["content"] or "") for m in sent)
    finally:
        await session.aclose()


# --- 3. tool output across an interruption -------------------------------------------------
async def test_tool_output_survives_an_interruption_and_reaches_the_llm_once(
    backend: VLLMRealtime, chat_server: ChatServer
) -> None:
    agent = Desk()
    chat_server.script(
        Text("Let me look up that ticket. "), Call("slow_lookup", json.dumps({"code": "A1"}))
    )
    chat_server.script(Text("Okay then."))
    session, transport = await start(backend, agent, playout="manual")
    try:
        called = session.next_event(ToolCalled)
        executed = session.next_event(ToolExecuted)
        say(transport, "Check ticket A one.")
        call = (await within(called)).call
        await transport.output.play(200)
        interrupted = session.next_event(AgentInterrupted)
        say(transport, "Never mind.", end_turn=False)  # barge in while the tool still runs
        await within(interrupted)
        assert not executed.done()
        agent.gate.set()  # the tool finishes after the interruption
        out = (await within(executed)).output
        assert out.call_id == call.call_id and out.output == "ticket A1 is open"
        answered = session.next_event(AgentTranscribed, final_reply("okay"))
        transport.push_silence(END_OF_TURN_MS)
        await within(answered)
        # The caller's turn carried the output to the LLM: once, and not as a placeholder.
        tools = tool_messages(chat_server, 1)
        assert tools == [{"role": "tool", "tool_call_id": call.call_id, "content": out.output}]
        assert MISSING_OUTPUT not in json.dumps(chat_server.requests[1].body)
        # No separate tool follow-up: the caller's new turn owns the next reply.
        assert {"never", "mind"} <= set(
            words(chat_server.requests[1].body["messages"][-1]["content"])
        )
        outputs = [it for it in session.conversation if isinstance(it, FunctionCallOutput)]
        assert [o.output for o in outputs] == ["ticket A1 is open"]
    finally:
        await session.aclose()
    assert len(chat_server.requests) == 2


async def test_a_tool_slower_than_the_next_turn_reaches_the_llm_once_next_to_its_call(
    backend: VLLMRealtime, chat_server: ChatServer
) -> None:
    agent = Desk()
    chat_server.script(
        Text("Let me look up that ticket. "), Call("slow_lookup", json.dumps({"code": "B2"}))
    )
    chat_server.script(Text("Okay then."))
    chat_server.script(Text("It is open."))
    session, transport = await start(backend, agent, playout="manual")
    try:
        called = session.next_event(ToolCalled)
        say(transport, "Check ticket B two.")
        call_id = (await within(called)).call.call_id
        await transport.output.play(200)
        answered = session.next_event(AgentTranscribed, final_reply("okay"))
        say(transport, "Never mind.")  # a whole new turn while the tool still runs
        await within(answered)
        # That turn's request had no output yet: the call got one placeholder, as servers need.
        assert tool_messages(chat_server, 1) == [
            {"role": "tool", "tool_call_id": call_id, "content": MISSING_OUTPUT}
        ]
        executed = session.next_event(ToolExecuted)
        agent.gate.set()
        out = (await within(executed)).output
        assert isinstance(session.conversation.items[-1], FunctionCallOutput)  # it came last
        reply = session.next_event(AgentTranscribed, final_reply("open"))
        await session.send_text("So what about the ticket?")
        await within(reply)
        # The late output reaches the LLM once, right after its call (where servers require it).
        sent = chat_server.requests[2].body["messages"]
        tools = [i for i, m in enumerate(sent) if m["role"] == "tool"]
        assert [sent[i] for i in tools] == [
            {"role": "tool", "tool_call_id": call_id, "content": out.output}
        ]
        assert [c["id"] for c in sent[tools[0] - 1].get("tool_calls", [])] == [call_id]
        assert sent[-1] == {"role": "user", "content": "So what about the ticket?"}
    finally:
        await session.aclose()
    assert len(chat_server.requests) == 3  # no tool follow-up for the interrupted reply


# --- 4. concurrent tools --------------------------------------------------------------------
async def test_concurrent_tools_then_one_follow_up(
    backend: VLLMRealtime, chat_server: ChatServer
) -> None:
    chat_server.script(Call("wait_for_signal", "{}"), Call("send_signal", "{}"))
    chat_server.script(Text("Both are done."))
    chat_server.script(Text("You are welcome."))
    session, transport = await start(backend)
    try:
        answered = session.next_event(AgentTranscribed, final_reply("done"))
        say(transport, "Run both tools.")
        # wait_for_signal only returns because send_signal ran while it was waiting.
        await within(answered)
        # The follow-up was requested after BOTH outputs: each is in it, none as a placeholder.
        tools = sorted(m["content"] for m in tool_messages(chat_server, 1))
        assert tools == ["signal received", "signal sent"]
        assert "tool_choice" not in chat_server.requests[1].body  # a normal step
        outputs = [it for it in session.conversation if isinstance(it, FunctionCallOutput)]
        assert sorted(o.output for o in outputs) == ["signal received", "signal sent"]
        # Exactly one follow-up: any other would have been requested before this next turn.
        welcome = session.next_event(AgentTranscribed, final_reply("welcome"))
        await session.send_text("Thanks.")
        await within(welcome)
        assert chat_server.requests[2].body["messages"][-1] == {
            "role": "user",
            "content": "Thanks.",
        }
    finally:
        await session.aclose()
    assert len(chat_server.requests) == 3


# --- 5. failing tools ------------------------------------------------------------------------
async def test_tool_errors_become_readable_outputs_and_the_session_goes_on(
    backend: VLLMRealtime, chat_server: ChatServer
) -> None:
    agent = Desk()
    chat_server.script(
        Call("broken", "{}"),
        Call("place_order", json.dumps({"product": "tea", "quantity": "lots"})),
    )
    chat_server.script(Text("Sorry, that did not work."))
    chat_server.script(Text("You are welcome."))
    session, transport = await start(backend, agent)
    errors: list[SessionError] = []
    session.on(SessionError, errors.append)
    try:
        sorry = session.next_event(AgentTranscribed, final_reply("sorry"))
        say(transport, "Order some tea.")
        await within(sorry)
        calls = {
            c["function"]["name"]: c["id"]
            for m in chat_server.requests[1].body["messages"]
            if m["role"] == "assistant"
            for c in m.get("tool_calls") or []
        }
        by_id = {m["tool_call_id"]: m["content"] for m in tool_messages(chat_server, 1)}
        assert by_id.keys() == set(calls.values())
        assert "database is down" in by_id[calls["broken"]]
        assert by_id[calls["broken"]].startswith("error:")
        assert "quantity" in by_id[calls["place_order"]]
        assert by_id[calls["place_order"]].startswith("error:")
        assert agent.orders == []  # invalid arguments never reached the tool
        # The session goes on: the next turn is answered as usual.
        welcome = session.next_event(AgentTranscribed, final_reply("welcome"))
        await session.send_text("Thanks anyway.")
        await within(welcome)
        assert chat_server.requests[2].body["messages"][-1] == {
            "role": "user",
            "content": "Thanks anyway.",
        }
        assert errors == []
    finally:
        await session.aclose()


# --- 6. a reply requested while one is active ----------------------------------------------
async def test_reply_during_an_active_response_is_queued(
    backend: VLLMRealtime, chat_server: ChatServer
) -> None:
    release = asyncio.Event()
    chat_server.script(Text("First answer. "), Gate(release), Text("And more."))
    chat_server.script(Text("Second answer."))
    session, _transport = await start(backend, reply_policy="queue")
    try:
        spoken = session.next_event(AgentTranscribed, lambda e: "First" in e.text)
        first = await session.generate_reply()
        await within(spoken)  # the model holds its stream open mid-reply
        pending = asyncio.ensure_future(session.generate_reply(instructions="Add a joke."))
        for _ in range(5):
            await asyncio.sleep(0)  # let it run up to where it waits
        assert not pending.done() and len(chat_server.requests) == 1
        release.set()
        second = await within(pending)
        assert first.done.done()  # the second was only requested once the first had ended
        assert (await within(first.done)).status == "completed"
        assert (await within(second.done)).status == "completed"
        sent = chat_server.requests[1].body["messages"]
        assert sent[0] == {"role": "system", "content": "Add a joke."}
        assert {"role": "assistant", "content": "First answer. And more."} in sent
    finally:
        await session.aclose()


async def test_reply_during_an_active_response_is_rejected(
    backend: VLLMRealtime, chat_server: ChatServer
) -> None:
    release = asyncio.Event()
    chat_server.script(Text("First answer. "), Gate(release))
    chat_server.script(Text("Second answer."))
    session, _transport = await start(backend, reply_policy="reject")
    try:
        first = await session.generate_reply()
        await within(first.created)
        with pytest.raises(ResponseActiveError):
            await session.generate_reply()
        release.set()
        assert (await within(first.done)).status == "completed"
        assert len(chat_server.requests) == 1
        second = await session.generate_reply()  # idle again: accepted
        assert (await within(second.done)).status == "completed"
        assert len(chat_server.requests) == 2
    finally:
        await session.aclose()


# --- 7. 48 kHz stereo caller audio ------------------------------------------------------------
async def test_48k_stereo_caller_reaches_the_16k_stt(
    backend: VLLMRealtime, vllm_server: VLLMRealtimeServer, chat_server: ChatServer
) -> None:
    session, transport = await start(backend, input_channels=2)
    try:
        heard = session.next_event(UserTranscribed, lambda e: e.final)
        speech = say(transport, "Please turn on the kitchen lights.")
        assert speech.channels == 2 and speech.sample_rate == 48000
        assert {"kitchen", "lights"} <= set(words((await within(heard)).text))
        # The STT got the turn at 16 kHz mono: speech plus padding, not 3x or 6x as long.
        (audio,) = vllm_server.connections[0].generations
        got_ms = audio.size / 16
        assert speech.duration_ms <= got_ms <= speech.duration_ms + 200 + END_OF_TURN_MS + 100
    finally:
        await session.aclose()


# --- live options ----------------------------------------------------------------------------
async def test_update_options_reach_the_next_completion(
    backend: VLLMRealtime, chat_server: ChatServer
) -> None:
    chat_server.script(Text("One."))
    chat_server.script(Text("Two."))
    session, _transport = await start(backend)
    try:
        first = session.next_event(AgentTranscribed, final_reply("one"))
        await session.send_text("Hello.")
        await within(first)
        assert "temperature" not in chat_server.requests[0].body
        await session.update_options(temperature=0.2, max_output_tokens=64, tool_choice="none")
        second = session.next_event(AgentTranscribed, final_reply("two"))
        await session.send_text("Again.")
        await within(second)
        body = chat_server.requests[1].body
        assert body["temperature"] == 0.2 and body["max_tokens"] == 64
        assert "tools" not in body  # tool_choice "none": no tools offered

        with pytest.raises(ConfigurationError, match="voice"):
            await session.update_options(voice="alloy")  # the voice is the TTS stage's
    finally:
        await session.aclose()
