"""AgentSession behaviour through the public API: MemoryTransport + ScriptedBackend.

Caller "speech" here is a tone burst and the VAD is `EnergyVAD`, so turn timing is
exact; tests/test_session_speech.py repeats the key flows with real speech and VADs.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from duplex.agents import (
    Agent,
    AgentInterrupted,
    AgentSession,
    AgentTranscribed,
    AudioFrame,
    ConversationItemAdded,
    EnergyVAD,
    FunctionCallOutput,
    Message,
    MetricsCollected,
    ResponseActiveError,
    ToolExecuted,
    TurnOptions,
    UserTranscribed,
    function_tool,
)
from duplex.agents.testing import MemoryTransport, Reply, ScriptedBackend, ScriptedCall, tone

TURN = TurnOptions(threshold=0.5, prefix_padding_ms=100, silence_duration_ms=200, min_speech_ms=60)


def speak(transport: MemoryTransport, ms: float = 400, silence_ms: float = 300) -> None:
    """A tone burst followed by enough silence to end the turn."""
    inp = transport.audio_input
    burst = tone(ms, inp.sample_rate, freq=300.0, level=0.3)
    if inp.channels > 1:
        burst = AudioFrame(
            np.repeat(burst.data, inp.channels, axis=1), inp.sample_rate, inp.channels
        )
    transport.push(burst)
    transport.push_silence(silence_ms)


class Shop(Agent):
    instructions = "You sell things."

    def __init__(self) -> None:
        super().__init__()
        self.orders: list[str] = []
        self.gate = asyncio.Event()

    @function_tool
    async def place_order(self, product: str, quantity: int) -> str:
        """Order a product. product: what to order. quantity: how many."""
        self.orders.append(f"{quantity}x {product}")
        return f"ordered {quantity} {product}"

    @function_tool
    async def slow_lookup(self, code: str) -> str:
        """Look up a code slowly."""
        await self.gate.wait()
        return f"code {code} is valid"

    @function_tool
    def broken(self) -> str:
        """A tool that fails."""
        raise RuntimeError("database is down")


async def start(backend: ScriptedBackend, *, agent: Agent | None = None, **kw: object):
    transport = MemoryTransport(
        input_rate=kw.pop("input_rate", 48000),  # type: ignore[arg-type]
        input_channels=kw.pop("input_channels", 1),  # type: ignore[arg-type]
        output_rate=48000,
        playout=kw.pop("playout", "manual"),  # type: ignore[arg-type]
    )
    session = AgentSession(agent=agent or Shop(), backend=backend, vad=EnergyVAD(), turn=TURN, **kw)  # type: ignore[arg-type]
    await session.start(transport)
    return session, transport


async def test_full_spoken_turn() -> None:
    backend = ScriptedBackend(
        [Reply(text="Hello there friend", audio_ms=400)], user_transcripts=["hi"]
    )
    session, transport = await start(backend, playout="auto")
    metrics = session.next_event(MetricsCollected)
    user = session.next_event(UserTranscribed)
    speak(transport)
    await backend.session.wait_for_call("create_response")
    m = (await metrics).metrics
    assert (await user).text == "hi"
    # Only speech (plus prefix/trailing silence) reached the backend, at its 24 kHz rate.
    commit = backend.session.called("commit_audio")[0]
    pushed_ms = 1000 * commit.args["samples"] / 24000
    assert 400 <= pushed_ms <= 400 + 100 + 300
    # Every ms of the reply was played, resampled to the transport's 48 kHz.
    assert transport.output.played_ms == pytest.approx(400, abs=20)
    assert transport.output.audio().sample_rate == 48000  # type: ignore[union-attr]
    assert m.end_to_end_ms is not None
    assert m.played_ms == pytest.approx(400, abs=20)
    assert not m.interrupted
    roles = [it.role for it in session.conversation if isinstance(it, Message)]
    assert roles == ["user", "assistant"]
    assert session.conversation.items[-1].text == "Hello there friend"  # type: ignore[union-attr]
    await session.aclose()


async def test_barge_in_truncates_to_what_was_played() -> None:
    backend = ScriptedBackend(
        [
            Reply(text="one two three four five six seven eight", audio_ms=1000),
            Reply(text="ok", audio_ms=100),
        ]
    )
    session, transport = await start(backend)
    speak(transport)
    await backend.session.wait_for_call("create_response")
    await backend.session.handles[0].done  # the server has sent the whole reply
    played = await transport.output.play(300)
    assert played == pytest.approx(300)
    interrupted = session.next_event(AgentInterrupted)
    speak(transport, ms=300)
    ev = await interrupted
    call = await backend.session.wait_for_call("truncate")
    assert call.args["audio_end_ms"] == 300
    assert ev.played_ms == pytest.approx(300)
    # Nothing more was played after the interruption and the buffer was cleared.
    assert transport.output.played_ms == pytest.approx(300)
    clock_ms, dropped_ms = transport.output.clears[0]
    assert clock_ms == pytest.approx(300) and dropped_ms == pytest.approx(20)  # one frame buffered
    # The reply was already complete on the server: no cancel may be sent for it.
    assert backend.session.called("cancel_response") == []
    assert [e.code for e in backend.session.errors] == []
    item = next(
        it for it in session.conversation if isinstance(it, Message) and it.role == "assistant"
    )
    assert item.truncated_ms == 300
    assert item.text == "one two"  # 300 of 1000 ms heard: the first 30% of the words
    await session.aclose()


async def test_barge_in_before_any_audio_deletes_the_item_and_cancels() -> None:
    backend = ScriptedBackend(
        [Reply(text="long answer", audio_ms=600, hold=True), Reply(text="ok", audio_ms=60)]
    )
    session, transport = await start(backend)
    added = session.next_event(
        ConversationItemAdded, lambda e: isinstance(e.item, Message) and e.item.role == "assistant"
    )
    speak(transport)
    assistant = await added
    speak(transport, ms=300)  # nothing was played (manual clock never advanced)
    await backend.session.wait_for_call("cancel_response")
    sync = await backend.session.wait_for_call("sync", count=2)
    assert [type(op).__name__ for op in sync.args["ops"]] == ["Delete"]
    assert assistant.item.id not in session.conversation
    assert backend.session.called("truncate") == []
    # Captions: the unheard reply ends with an empty final, never with its unheard text.
    finals = [
        e.text
        for e in transport.published
        if isinstance(e, AgentTranscribed) and e.final and e.item_id == assistant.item.id
    ]
    assert finals == [""]
    assert backend.session.errors == []
    await session.aclose()


async def test_interruptions_disabled_keep_playing() -> None:
    backend = ScriptedBackend([Reply(text="a", audio_ms=400), Reply(text="b", audio_ms=100)])
    session, transport = await start(backend, allow_interruptions=False)
    speak(transport)
    await backend.session.wait_for_call("create_response")
    await transport.output.play(100)
    speak(transport, ms=300)
    # The second turn is queued behind the first reply instead of cutting it.
    await transport.output.play(300)
    await backend.session.wait_for_call("create_response", count=2)
    assert backend.session.called("truncate") == []
    assert backend.session.called("cancel_response") == []
    await session.aclose()


async def test_interrupt_min_speech_ms_ignores_short_noises() -> None:
    backend = ScriptedBackend([Reply(text="a", audio_ms=800), Reply(text="b", audio_ms=100)])
    session, transport = await start(backend, interrupt_min_speech_ms=400)
    speak(transport)
    await backend.session.wait_for_call("create_response")
    await transport.output.play(100)
    # 200 ms of speech: a turn for the VAD but too short to interrupt.
    speak(transport, ms=200, silence_ms=300)
    await backend.session.wait_for_call("commit_audio", count=2)
    assert backend.session.called("truncate") == []
    await session.aclose()


async def test_tool_outputs_survive_interruption_and_are_sent_once() -> None:
    agent = Shop()
    backend = ScriptedBackend(
        [
            Reply(
                text="Let me check",
                audio_ms=400,
                calls=(ScriptedCall("slow_lookup", {"code": "A1"}),),
            ),
            Reply(text="next", audio_ms=100),
        ]
    )
    session, transport = await start(backend, agent=agent)
    started = session.next_event(ToolExecuted)
    speak(transport)
    await backend.session.wait_for_call("create_response")
    await backend.session.handles[0].done  # the call was issued; the tool now waits on its gate
    await transport.output.play(100)
    assert not started.done()
    speak(transport, ms=300)  # barge in while the tool still runs
    await backend.session.wait_for_call("truncate")
    agent.gate.set()
    out = (await started).output
    assert out.output == "code A1 is valid"
    await backend.session.wait_for_call("create_response", count=2)  # the caller's new turn
    creates = [
        op.item
        for c in backend.session.called("sync")
        for op in c.args["ops"]
        if type(op).__name__ == "Create" and isinstance(op.item, FunctionCallOutput)
    ]
    assert [c.output for c in creates] == ["code A1 is valid"]
    # No extra tool follow-up reply: the caller's turn owns the next reply.
    assert len(backend.session.called("create_response")) == 2
    await session.aclose()


async def test_concurrent_tools_one_reply_after_last_output() -> None:
    agent = Shop()
    backend = ScriptedBackend(
        [
            Reply(
                text="working",
                audio_ms=100,
                calls=(
                    ScriptedCall("slow_lookup", {"code": "B2"}),
                    ScriptedCall("place_order", {"product": "tea", "quantity": 2}),
                ),
            ),
            Reply(text="done", audio_ms=100),
        ]
    )
    session, transport = await start(backend, agent=agent, playout="auto")
    speak(transport)
    order = await session.wait_for(ToolExecuted)
    assert order.output.output == "ordered 2 tea"  # ran while slow_lookup is still waiting
    assert len(backend.session.called("create_response")) == 1
    agent.gate.set()
    follow = await backend.session.wait_for_call("create_response", count=2)
    outputs = [it for it in session.conversation if isinstance(it, FunctionCallOutput)]
    assert len(outputs) == 2
    assert follow.args["tool_choice"] is None
    assert agent.orders == ["2x tea"]
    await session.aclose()


async def test_tool_that_raises_and_invalid_arguments_become_readable_outputs() -> None:
    backend = ScriptedBackend(
        [
            Reply(
                calls=(
                    ScriptedCall("broken"),
                    ScriptedCall("place_order", {"product": "tea", "quantity": "lots"}),
                )
            ),
            Reply(text="sorry", audio_ms=100),
        ]
    )
    session, transport = await start(backend, playout="auto")
    speak(transport)
    await backend.session.wait_for_call("create_response", count=2)
    outs = {o.name: o for o in session.conversation if isinstance(o, FunctionCallOutput)}
    assert outs["broken"].is_error and "database is down" in outs["broken"].output
    assert outs["place_order"].is_error and "quantity" in outs["place_order"].output
    assert session.agent.orders == []  # type: ignore[attr-defined]
    await session.aclose()


async def test_max_tool_steps_forces_a_spoken_answer() -> None:
    loop_call = ScriptedCall("place_order", {"product": "tea", "quantity": 1})
    backend = ScriptedBackend(
        [Reply(calls=(loop_call,)), Reply(calls=(loop_call,)), Reply(text="stop", audio_ms=60)]
    )
    session, transport = await start(backend, playout="auto", max_tool_steps=2)
    speak(transport)
    third = await backend.session.wait_for_call("create_response", count=3)
    assert third.args["tool_choice"] == "none"
    assert backend.session.called("create_response")[1].args["tool_choice"] is None
    await session.aclose()


@pytest.mark.parametrize("policy", ["queue", "cancel_existing", "reject"])
async def test_reply_requested_during_active_response(policy: str) -> None:
    backend = ScriptedBackend(
        [Reply(text="first", audio_ms=200, hold=True), Reply(text="second", audio_ms=100)]
    )
    session, _ = await start(backend, reply_policy=policy)
    first = await session.generate_reply()
    await first.created
    if policy == "reject":
        with pytest.raises(ResponseActiveError):
            await session.generate_reply()
        assert len(backend.session.called("create_response")) == 1
    elif policy == "cancel_existing":
        second = await session.generate_reply()
        await second.created
        assert len(backend.session.called("cancel_response")) == 1
        assert (await first.done).status == "cancelled"
    else:
        pending = asyncio.ensure_future(session.generate_reply())
        await asyncio.sleep(0)
        assert len(backend.session.called("create_response")) == 1  # still waiting
        backend.session.release()
        second = await pending
        assert (await second.created).startswith("resp_")
        assert (await first.done).status == "completed"
    # Never two active responses on the server.
    assert not any(
        e.code == "conversation_already_has_active_response" for e in backend.session.errors
    )
    await session.aclose()


@pytest.mark.parametrize("backend_rate", [16000, 24000])
async def test_48k_stereo_input_reaches_backend_at_its_rate(backend_rate: int) -> None:
    backend = ScriptedBackend(
        [Reply(text="ok", audio_ms=100)],
        input_sample_rate=backend_rate,
        output_sample_rate=backend_rate,
    )
    session, transport = await start(backend, input_channels=2, playout="auto")
    speak(transport, ms=500)
    commit = await backend.session.wait_for_call("commit_audio")
    pushed_ms = 1000 * commit.args["samples"] / backend_rate
    assert 500 <= pushed_ms <= 500 + 100 + 300  # speech + prefix + trailing silence, no rate error
    await session.aclose()


async def test_bad_frames_rejected_with_clear_errors() -> None:
    from duplex.agents import AudioFormatError

    backend = ScriptedBackend()
    session, transport = await start(backend)
    with pytest.raises(AudioFormatError, match="empty"):
        AudioFrame(np.zeros(0, dtype=np.int16), 48000)
    with pytest.raises(AudioFormatError, match="whole number"):
        AudioFrame.from_pcm16(b"\x00\x01\x02", 48000)
    with pytest.raises(AudioFormatError, match="NaN"):
        AudioFrame.from_float(np.array([0.0, np.nan]), 48000)
    with pytest.raises(AudioFormatError, match="int16"):
        AudioFrame(np.zeros(10, dtype=np.float32), 48000)  # type: ignore[arg-type]
    with pytest.raises(AudioFormatError, match="AudioFrame"):
        transport.audio_input.push(b"\x00\x00")  # type: ignore[arg-type]
    # The session is unaffected and still takes a turn.
    backend.replies.append(Reply(text="fine", audio_ms=60))
    speak(transport)
    await backend.session.wait_for_call("create_response")
    await session.aclose()


@pytest.mark.parametrize("server_replies", [True, False])
async def test_server_vad_turns_reply_only_when_the_server_does_not(server_replies: bool) -> None:
    backend = ScriptedBackend(
        [Reply(text="hi", audio_ms=60)], server_vad=True, server_replies=server_replies
    )
    session, transport = await start(backend, playout="auto")
    transport.push_silence(200)
    # With server turn detection every frame reaches the backend, silence included.
    await backend.session.wait_for_call("push_audio", count=5)
    backend.session.speech_started()
    backend.session.speech_stopped()
    if server_replies:
        # The server starts its own replies: the only request is the one made here.
        handle = await session.generate_reply()
        await handle.done
        assert len(backend.session.called("create_response")) == 1
    else:
        await backend.session.wait_for_call("create_response")
    await session.aclose()


async def test_local_barge_in_leaves_the_cancel_to_a_server_that_interrupts() -> None:
    backend = ScriptedBackend(
        [Reply(text="long", audio_ms=800, hold=True)], server_vad=True, server_interrupts=True
    )
    session, transport = await start(backend)
    handle = await session.generate_reply()
    await handle.created
    await transport.output.play(100)
    interrupted = session.next_event(AgentInterrupted)
    speak(transport, ms=300)  # the local VAD hears it first
    assert (await interrupted).played_ms == pytest.approx(100)
    assert backend.session.called("cancel_response") == []
    backend.session.release()  # what the server's own VAD cancel would end
    assert (await backend.session.wait_for_call("truncate")).args["audio_end_ms"] == 100
    await session.aclose()
