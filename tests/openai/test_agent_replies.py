"""Replies own their lifecycle, with `OpenAIRealtime` and the protocol test server.

What the caller heard is read from `MemoryTransport` (played frames, clears), and
timing truth from the moments the test itself pushed the caller's audio.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from duplex.agents import (
    Agent,
    AgentInterrupted,
    AgentSession,
    AudioFrame,
    ConfigurationError,
    ConversationItemAdded,
    Message,
    MetricsCollected,
    function_tool,
)
from duplex.agents.testing import MemoryTransport, tone
from duplex.backends.openai import ServerVAD

from ..speech import concat, silence, split
from .helpers import backend, utterance
from .server import RealtimeTestServer, Reply
from .test_agent_session import settled, start

FRAME_MS = 20.0


def assistant_added(session: AgentSession) -> asyncio.Future[ConversationItemAdded]:
    return session.next_event(
        ConversationItemAdded, lambda e: isinstance(e.item, Message) and e.item.role == "assistant"
    )


class Mic:
    """Pushes caller audio in 20 ms frames at real time, as a microphone would, and
    remembers when each frame was delivered (the capture time of its last sample)."""

    def __init__(self, transport: MemoryTransport) -> None:
        self.transport = transport
        self.ends: list[float] = []  # position (ms since the call began) of each frame's end
        self.times: list[float] = []

    @property
    def position_ms(self) -> float:
        return self.ends[-1] if self.ends else 0.0

    async def say(self, audio: AudioFrame) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        for frame in split(audio, FRAME_MS):
            due += frame.duration
            await asyncio.sleep(max(0.0, due - loop.time()))
            self.ends.append(self.position_ms + frame.duration_ms)
            self.times.append(time.monotonic())
            self.transport.audio_input.push(frame)

    def captured_at(self, position_ms: float) -> float:
        i = next(i for i, end in enumerate(self.ends) if end >= position_ms)
        return self.times[i] - (self.ends[i] - position_ms) / 1000.0


def server_sent(server: RealtimeTestServer, event_type: str) -> list[dict[str, Any]]:
    return [e for _, e in server.sent if e["type"] == event_type]


async def test_barge_in_on_the_second_reply_truncates_only_it(server: RealtimeTestServer) -> None:
    server.replies.extend(
        [
            Reply(text="First answer.", audio_ms=400),
            Reply(text="A much longer second answer " * 4, audio_ms=3000, hold_after_ms=1500),
        ]
    )
    session, transport, _ = await start(server, playout="manual")
    first = assistant_added(session)
    handle = await session.generate_reply()
    a = (await asyncio.wait_for(first, 5)).item
    await asyncio.wait_for(handle.done, 5)
    accounted = session.next_event(MetricsCollected)
    await transport.output.play(400)  # reply A heard to its end
    await asyncio.wait_for(accounted, 5)
    second = assistant_added(session)
    await session.generate_reply()
    b = (await asyncio.wait_for(second, 5)).item
    await transport.output.play(500)
    interrupted = session.next_event(AgentInterrupted)
    transport.push(utterance("wait", rate=48000))
    ev = await asyncio.wait_for(interrupted, 10)
    await server.wait_until(lambda: bool(server.of_type("conversation.item.truncate")))
    # The server answers the barge-in turn with a third reply; let it finish.
    await server.wait_until(
        lambda: len(server.current.responses) == 3 and server.current.active is None
    )
    await settled(server, session)
    truncates = server.of_type("conversation.item.truncate")
    assert [(t["item_id"], t["audio_end_ms"]) for t in truncates] == [(b.id, 500)]
    assert ev.item_id == b.id and ev.played_ms == pytest.approx(500) and not ev.resumed
    kept = session.conversation.get(a.id)
    assert isinstance(kept, Message) and kept.truncated_ms is None
    assert kept.text == "First answer."
    remote_a = next(it for it in server.current.items if it["id"] == a.id)
    assert remote_a["content"][0]["transcript"] == "First answer."
    assert sum(server.errors_sent.values()) == 0
    await session.aclose()


async def test_server_vad_metrics_equal_the_audio_derived_truth(
    server: RealtimeTestServer,
) -> None:
    """End-to-end: caller's last speech sample captured -> first reply frame written.
    Interruption: true speech onset captured -> output stopped. Within one frame."""
    server.replies.extend(
        [Reply(text="Answer one.", audio_ms=400), Reply(text="Long " * 20, audio_ms=4000)]
    )
    b = backend(server, turn_detection=ServerVAD(silence_duration_ms=300, prefix_padding_ms=100))
    session = AgentSession(agent=Agent(), backend=b)
    transport = MemoryTransport(input_rate=24000, output_rate=24000, playout="realtime")
    await session.start(transport)
    rate = 24000
    mic = Mic(transport)
    metrics = session.next_event(MetricsCollected)
    # The caller speaks from 200 to 600 ms, then waits.
    await mic.say(concat(silence(0.2, rate), tone(400, rate, freq=300.0), silence(0.7, rate)))
    m = (await asyncio.wait_for(metrics, 10)).metrics
    end_ms = server_sent(server, "input_audio_buffer.speech_stopped")[0]["audio_end_ms"]
    assert end_ms == pytest.approx(600, abs=2 * FRAME_MS)  # the server VAD's own granularity
    truth = (transport.output.played[0].wall - mic.captured_at(end_ms)) * 1000.0
    # The caller really waited for the server's silence window (less the delivery jitter
    # of the frame that carried the last speech sample).
    assert truth > 300 - FRAME_MS
    assert m.end_to_end_ms == pytest.approx(truth, abs=FRAME_MS)

    # A barge-in: onset of the caller's speech -> output stopped.
    started = assistant_added(session)
    await session.generate_reply()
    await asyncio.wait_for(started, 5)
    await asyncio.sleep(0.3)  # let it play a little
    interrupted = session.next_event(AgentInterrupted)
    onset_ms = mic.position_ms + 100
    barge = asyncio.ensure_future(
        mic.say(concat(silence(0.1, rate), tone(300, rate, freq=300.0), silence(0.5, rate)))
    )
    ev = await asyncio.wait_for(interrupted, 10)
    await barge
    start_ms = server_sent(server, "input_audio_buffer.speech_started")[1]["audio_start_ms"]
    assert start_ms == pytest.approx(onset_ms, abs=2 * FRAME_MS)
    truth = (transport.output.cleared_at[0] - mic.captured_at(start_ms)) * 1000.0
    assert truth > 2 * FRAME_MS  # the server's event took a while: the clock starts before it
    assert ev.latency_ms == pytest.approx(truth, abs=FRAME_MS)
    await session.aclose()


async def test_false_interruption_resumes_with_server_vad(server: RealtimeTestServer) -> None:
    server.replies.append(Reply(text="A long story " * 6, audio_ms=2000, hold_after_ms=1200))
    server.transcripts.extend([""])  # the noise has no words
    b = backend(server, turn_detection=ServerVAD(silence_duration_ms=200))
    session = AgentSession(
        agent=Agent(), backend=b, resume_false_interruption=True, false_interruption_timeout=1.0
    )
    transport = MemoryTransport(input_rate=24000, output_rate=24000, playout="manual")
    await session.start(transport)
    # The server may not cancel on noise any more: the session decides and cancels.
    td = server.current.session["audio"]["input"]["turn_detection"]
    assert td["interrupt_response"] is False
    added = assistant_added(session)
    await session.generate_reply()
    await asyncio.wait_for(added, 5)
    await transport.output.play(300)
    resumed = session.next_event(AgentInterrupted)
    transport.push(concat(tone(150, 24000, freq=300.0), silence(0.5, 24000)))
    ev = await asyncio.wait_for(resumed, 10)
    assert ev.resumed and ev.played_ms == pytest.approx(300)
    server.current.responses[-1].reply.release.set()
    await transport.output.play(1700)
    assert transport.output.played_ms == pytest.approx(2000)
    assert server.of_type("conversation.item.truncate") == []
    assert server.of_type("response.cancel") == []
    assert transport.output.clears == []
    await settled(server, session)
    await session.aclose()


async def test_update_tools_and_options_reach_the_server(server: RealtimeTestServer) -> None:
    @function_tool
    async def weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    session, _transport, _ = await start(server, turn_detection=None)
    await session.update_tools([weather])
    tools = server.of_type("session.update")[-1]["session"]["tools"]
    assert [t["name"] for t in tools] == ["weather"]
    await session.update_options(voice="cedar", max_output_tokens=120, tool_choice="none")
    sent = server.of_type("session.update")[-1]["session"]
    assert sent["audio"]["output"]["voice"] == "cedar"
    assert sent["max_output_tokens"] == 120 and sent["tool_choice"] == "none"
    assert server.current.session["audio"]["output"]["voice"] == "cedar"
    with pytest.raises(ConfigurationError, match="GA"):
        await session.update_options(temperature=0.8)  # GA has no temperature
    server.replies.append(Reply(text="Hi.", audio_ms=200))
    handle = await session.generate_reply()
    await asyncio.wait_for(handle.done, 5)
    await settled(server, session)
    with pytest.raises(ConfigurationError, match="voice"):
        await session.update_options(voice="marin")  # it has spoken: the voice is fixed
    await session.aclose()
