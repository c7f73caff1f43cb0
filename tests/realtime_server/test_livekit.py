"""livekit-agents' own `RealtimeModel(base_url=...)` (livekit-plugins-openai) against the server.

No room: the benchmark's queue microphone and 1x clocked speaker stand in for one,
so livekit's playback position (what it truncates to) is real playout time.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import numpy as np
import pytest

from ..cascade.chat_server import Text
from .conftest import API_KEY, Checked
from .helpers import utterance, words

pytest.importorskip("livekit.plugins.openai")

from livekit.agents import Agent, AgentSession
from livekit.plugins.openai.realtime import RealtimeModel

from bench.clock import LatenessHistogram, PlayoutClock
from bench.fw_livekit import ClockedSink, QueueInput

LONG_REPLY = (
    "Here is a long answer. It goes on for quite a while. There are many words in it. "
    "You will not hear the end of it. This is the very last sentence."
)


class Call:
    def __init__(self, server: Checked, http: aiohttp.ClientSession) -> None:
        self.clock = PlayoutClock(LatenessHistogram())
        self.mic = QueueInput()
        self.sink = ClockedSink(self.clock)
        model = RealtimeModel(
            model="duplex", base_url=server.url, api_key=API_KEY, http_session=http
        )
        self.session: AgentSession[None] = AgentSession(llm=model, aec_warmup_duration=None)
        self.session.input.audio = self.mic
        self.session.output.audio = self.sink
        self.items: list[Any] = []
        self.changed = asyncio.Event()
        self.errors: list[Any] = []

        def added(ev: Any) -> None:
            self.items.append(ev.item)
            self.changed.set()

        self.session.on("conversation_item_added", added)
        self.session.on("error", self.errors.append)

    async def start(self) -> None:
        await self.session.start(Agent(instructions="You are a test agent."), record=False)

    def say(self, text: str) -> None:
        pcm = utterance(text, rate=48000).data[:, 0]
        for i in range(0, pcm.size, 960):
            self.mic.push(np.ascontiguousarray(pcm[i : i + 960]))

    async def assistant_message(self, n: int = 1, timeout: float = 60.0) -> Any:
        async def scan() -> Any:
            while True:
                said = [it for it in self.items if getattr(it, "role", None) == "assistant"]
                if len(said) >= n:
                    return said[n - 1]
                self.changed.clear()
                await self.changed.wait()

        return await asyncio.wait_for(scan(), timeout)

    async def aclose(self) -> None:
        self.mic.end()
        await self.session.aclose()


async def test_livekit_realtime_model_completes_a_spoken_turn(echo_server: Checked) -> None:
    async with aiohttp.ClientSession() as http:
        call = Call(echo_server, http)
        await call.start()
        call.say("the red house")
        reply = await call.assistant_message()
        heard = [it for it in call.items if getattr(it, "role", None) == "user"]
        said = set(words(reply.text_content or ""))
        # The echo repeats what the server transcribed (Whisper tiny may hear "red" as
        # "rid" when the machine is loaded); the words around it are stable.
        assert {"said", "house"} <= said
        assert heard and set(words(heard[0].text_content or "")) <= said
        assert not reply.interrupted
        await asyncio.wait_for(call.clock.wait_drained(), 30)
        assert call.clock.segments and call.clock.segments[-1].played_ms > 500
        assert not call.errors
        await call.aclose()


async def test_livekit_barge_in_truncates_to_what_was_played(server: Checked) -> None:
    assert server.chat is not None
    server.chat.script(Text(LONG_REPLY))
    server.chat.script(Text("Stopping now."))
    async with aiohttp.ClientSession() as http:
        call = Call(server, http)
        await call.start()
        call.say("tell me everything")
        while not (call.clock.current and call.clock.current.played_ms >= 1500):  # noqa: ASYNC110 - no change event
            await asyncio.sleep(0.05)
        call.say("stop please, I would like to ask you about something else instead")
        reply = await call.assistant_message()
        assert reply.interrupted
        truncated = await _recorded(server, "conversation.item.truncated")
        full_ms = sum(
            len(e["delta"]) * 3 / 4 / 48 for e in _sent(server, "response.output_audio.delta")
        )
        assert 1500 <= truncated[0]["audio_end_ms"] < full_ms
        # livekit cancels the reply server VAD started for the barge-in turn when it resolves
        # its (paused) interruption late; so ask for one and read what the model remembers.
        await _settled(server)
        asked = len(_sent(server, "response.done"))
        call.session.generate_reply(instructions="Answer the caller.")
        await _recorded(server, "response.done", asked + 1)
        memory = [m for m in server.chat.requests[-1].body["messages"] if m["role"] == "assistant"]
        heard = memory[0]["content"]
        assert heard and LONG_REPLY.startswith(heard) and "last sentence" not in heard
        await call.aclose()


def _sent(server: Checked, kind: str) -> list[dict[str, Any]]:
    return [e for e in server.sent if e["type"] == kind]


async def _recorded(server: Checked, kind: str, n: int = 1) -> list[dict[str, Any]]:
    """Poll the server's sent events (they have no change notification)."""

    async def run() -> list[dict[str, Any]]:
        while len(found := _sent(server, kind)) < n:  # noqa: ASYNC110 - no change event
            await asyncio.sleep(0.05)
        return found

    return await asyncio.wait_for(run(), 60)


async def _settled(server: Checked) -> None:
    async def run() -> None:
        while len(_sent(server, "response.created")) != len(_sent(server, "response.done")):  # noqa: ASYNC110 - no change event
            await asyncio.sleep(0.05)

    await asyncio.wait_for(run(), 60)
