"""`Call`: drives one long call step by step and checks the whole call after each step.

The output runs on a manual clock at the backend's rate, so "how much the caller
heard" is decided by the test (`MemoryAudioOutput.play`) and measured from the
frames the transport played (`signal.heard`), never from the session's books.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from typing import Any

from duplex.agents import Agent, AgentSession, function_tool
from duplex.agents.audio import AudioFrame
from duplex.agents.events import AgentInterrupted, ToolCalled
from duplex.agents.testing import MemoryTransport

from . import signal
from .invariants import check_call
from .rig import ReplySpec, Rig

WAIT_S = 20.0


class ConformanceAgent(Agent):
    instructions = "You answer questions about keys."

    def __init__(self, gates: dict[str, asyncio.Event]) -> None:
        super().__init__()
        self.gates = gates

    @function_tool
    async def lookup(self, key: str) -> str:
        """Look a key up. key: the key."""
        gate = self.gates.get(key)
        if gate is not None:
            await gate.wait()
        return f"value of {key}"

    @function_tool
    async def broken(self, key: str) -> str:
        """A tool that always fails. key: the key."""
        raise RuntimeError(f"broken for {key}")


class Call:
    def __init__(
        self,
        rig: Rig,
        *,
        seed: int = 0,
        resume_false_interruption: bool = False,
        false_interruption_timeout: float = 1.5,
        session_options: dict[str, Any] | None = None,
    ) -> None:
        self.rig = rig
        self.rng = random.Random(seed)
        self.resume = resume_false_interruption
        self.transport = MemoryTransport(
            input_rate=rig.input_rate, output_rate=signal.RATE, playout="manual"
        )
        self.gates: dict[str, asyncio.Event] = {}
        opts: dict[str, Any] = {**rig.session_options(), **(session_options or {})}
        if resume_false_interruption:
            opts["resume_false_interruption"] = True
            opts["false_interruption_timeout"] = false_interruption_timeout
        self._options = opts
        self.session: AgentSession
        self.specs: dict[int, ReplySpec] = {}
        #: Tags of replies that were playing when the caller barged in (may be truncated).
        self.cut: set[int] = set()
        #: Problems found by the per-step assertions that are not whole-call invariants.
        self.problems: list[str] = []
        self.interruptions: list[AgentInterrupted] = []
        self.steps: list[str] = []
        self._tags = 0
        self._utterances = 0
        self._noise_seed = seed * 1000

    # --- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        await self.rig.start()
        self.session = AgentSession(
            agent=ConformanceAgent(self.gates), backend=self.rig.backend, **self._options
        )
        self.rig.attach(self.session)
        self.session.on(AgentInterrupted, self.interruptions.append)
        await self.session.start(self.transport)

    async def aclose(self) -> None:
        for gate in self.gates.values():
            gate.set()
        await self.session.aclose()
        await self.rig.stop()

    @property
    def out(self) -> Any:
        return self.transport.audio_output

    # --- scripting ------------------------------------------------------------------------
    def new_reply(self, audio_ms: int | None = None) -> ReplySpec:
        tag = signal.tag_for(self._tags)
        self._tags += 1
        ms = audio_ms if audio_ms is not None else self.rng.choice([200, 300, 400, 500, 600])
        words = [f"reply{tag}"] + [f"word{i}" for i in range(1, max(1, ms // 100))]
        spec = ReplySpec(tag=tag, audio_ms=ms, text=" ".join(words) + ".")
        self.specs[tag] = spec
        return spec

    def _push(self, frame: AudioFrame) -> None:
        rate = self.rig.input_rate
        self.transport.push(signal_pad(frame, rate))

    def say(self) -> str:
        """The caller asks a question (real words for the server's speech-to-text)."""
        k = self._utterances
        self._utterances += 1
        words = signal.utterance_words(k)
        self.rig.expect_words(words)
        self._push(signal.caller_tone(k, 400, self.rig.input_rate))
        return words

    def noise(self, kind: str) -> None:
        """A sound with no words: a noise burst, or a short 'mm-hm' hum."""
        self.rig.expect_words("")
        rate = self.rig.input_rate
        if kind == "noise":
            self._noise_seed += 1
            self._push(signal.noise(200, rate, self._noise_seed))
        else:
            t = AudioFrame.from_float(
                0.3 * _sin(180.0, 160, rate), rate
            )  # 180 Hz: no utterance uses it
            self._push(t)

    # --- waiting --------------------------------------------------------------------------
    async def until(self, cond: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not cond():
            if loop.time() > end:
                raise AssertionError(f"[{self.rig.name}] timed out waiting for {what}")
            await asyncio.sleep(0.002)

    def _quiet(self) -> bool:
        s = self.session
        return (
            s.agent_state == "listening"
            and s.user_state == "listening"
            and self.out.buffered_ms == 0
            and self.rig.idle()
            and all(g.is_set() for g in self.gates.values())
        )

    async def play_out(self) -> None:
        """Play everything the agent says until the call is quiet (and stays quiet)."""
        stable = 0
        loop = asyncio.get_running_loop()
        end = loop.time() + WAIT_S
        while stable < 5:
            if loop.time() > end:
                raise AssertionError(
                    f"[{self.rig.name}] call never went quiet: agent {self.session.agent_state}, "
                    f"user {self.session.user_state}, server idle {self.rig.idle()}"
                )
            if self.out.buffered_ms > 0:
                await self.out.play(self.out.frame_ms)
                stable = 0
                continue
            stable = stable + 1 if self._quiet() else 0
            await asyncio.sleep(0.005)

    async def _started(self, n0: int) -> None:
        await self.until(lambda: self.rig.responses_started() > n0, "a reply to start")

    async def _play_into(self, at_ms: int) -> None:
        """Play the first ``at_ms`` of the reply now starting (0: wait for its first frame)."""
        await self.until(lambda: self.out.buffered_ms > 0, "reply audio")
        if at_ms:
            await self.out.play(at_ms)

    # --- steps ----------------------------------------------------------------------------
    async def turn(self) -> None:
        """Caller asks, the reply plays in full."""
        self.steps.append("turn")
        spec = self.new_reply()
        self.rig.plan(spec)
        n0 = self.rig.responses_started()
        self.say()
        await self._started(n0)
        await self.play_out()

    def _cut_point(self, spec: ReplySpec, where: str) -> int:
        if where == "early":
            return 0
        if where == "late":
            return spec.audio_ms - 20
        return max(20, (spec.audio_ms // 2) // 20 * 20)

    async def barge_in(self, where: str) -> AgentInterrupted:
        """Caller asks, the reply plays up to ``where``, the caller asks again over it."""
        self.steps.append(f"barge_in:{where}")
        spec = self.new_reply()
        self.rig.plan(spec)
        n0 = self.rig.responses_started()
        self.say()
        await self._started(n0)
        await self._play_into(self._cut_point(spec, where))
        follow = self.new_reply()
        self.rig.plan(follow)
        interrupted = self.session.next_event(AgentInterrupted)
        n1 = self.rig.responses_started()
        self.cut.add(spec.tag)
        self.say()
        ev = await asyncio.wait_for(interrupted, WAIT_S)
        want = self.item_of(spec.tag)
        if ev.item_id != want:
            self.problems.append(
                f"AgentInterrupted.item_id is {ev.item_id}, the cut item is {want} "
                f"(reply {spec.tag}, step {len(self.steps)})"
            )
        await self._started(n1)
        await self.play_out()
        return ev

    async def false_interruption(self, kind: str, where: str = "mid") -> AgentInterrupted:
        """A sound with no words over a reply: with resume on, the reply goes on untouched."""
        self.steps.append(f"false_interruption:{kind}:{where}")
        spec = self.new_reply(audio_ms=600)
        self.rig.plan(spec)
        n0 = self.rig.responses_started()
        self.say()
        await self._started(n0)
        await self._play_into(self._cut_point(spec, where))
        interrupted = self.session.next_event(AgentInterrupted)
        if not self.resume:
            self.cut.add(spec.tag)
        self.noise(kind)
        ev = await asyncio.wait_for(interrupted, WAIT_S)
        if self.resume:
            resumed = self.session.next_event(AgentInterrupted, lambda e: _resumed(e))
            if not _resumed(ev):
                ev = await asyncio.wait_for(resumed, WAIT_S)
            else:
                resumed.cancel()
        await self.play_out()
        return ev

    async def tool_turn(self, kind: str) -> None:
        """A reply that calls a tool: fast, slow, failing, or overtaken by the caller."""
        self.steps.append(f"tool:{kind}")
        key = f"key{len(self.steps)}"
        name = "broken" if kind == "failing" else "lookup"
        if kind in ("slow", "interrupted"):
            self.gates[key] = asyncio.Event()
        self.rig.plan(ReplySpec(calls=((name, json.dumps({"key": key})),)))
        if kind != "interrupted":
            self.rig.plan(self.new_reply())
        called = self.session.next_event(ToolCalled)
        n0 = self.rig.responses_started()
        self.say()
        await self._started(n0)
        await asyncio.wait_for(called, WAIT_S)
        if kind == "interrupted":
            follow = self.new_reply()
            self.rig.plan(follow)
            n1 = self.rig.responses_started()
            self.say()
            await self._started(n1)
            await self.out.play(self.out.frame_ms)  # the caller hears the new reply begin
        gate = self.gates.get(key)
        if gate is not None:
            gate.set()
        await self.play_out()

    async def drop(self) -> None:
        """The server drops the connection mid-reply; the call goes on after a reconnect."""
        self.steps.append("drop")
        spec = self.new_reply(audio_ms=600)
        spec = ReplySpec(spec.tag, spec.audio_ms, spec.text, drop_after_ms=300)
        self.specs[spec.tag] = spec
        self.rig.plan(spec)
        n0 = self.rig.responses_started()
        self.say()
        await self._started(n0)
        await self.play_out()

    # --- checks ---------------------------------------------------------------------------
    def item_of(self, tag: int) -> str | None:
        return next((i for i, t in self.rig.item_tags().items() if t == tag), None)

    def check(self) -> None:
        problems = [*self.problems, *check_call(self)]
        if problems:
            head = f"[{self.rig.name}] after steps {self.steps}:\n  "
            raise AssertionError(head + "\n  ".join(problems))

    async def settle_and_check(self) -> None:
        """The server may still be acknowledging the last edits: wait for agreement, then
        assert (the assertion message is the difference that remained)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + 5.0
        while check_call(self) or self.problems:
            if loop.time() > end:
                break
            await asyncio.sleep(0.01)
        self.check()


def _resumed(ev: AgentInterrupted) -> bool:
    return bool(getattr(ev, "resumed", False))


def _sin(hz: float, ms: float, rate: int) -> Any:
    import numpy as np

    t = np.arange(round(rate * ms / 1000)) / rate
    return np.sin(2 * np.pi * hz * t)


def signal_pad(frame: AudioFrame, rate: int) -> AudioFrame:
    """Speech, then enough silence for any VAD to end the turn."""
    silence = AudioFrame.silence(0.8, rate)
    lead = AudioFrame.silence(0.1, rate)
    return AudioFrame.concat([lead, frame, silence])
