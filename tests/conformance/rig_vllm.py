"""`VLLMRealtime` against the project's vLLM test servers (STT, chat, speech).

The realtime STT server hears the caller's tones as words (`signal.transcribe_tone`),
the chat server streams the scripted replies and records every request, and the
speech server speaks each sentence as tagged audio. There are no server-side item
ids here: the server's view of the conversation is the ``messages`` of each chat
request, compared with the client's conversation as it was when the request came.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from duplex.agents import AgentSession
from duplex.agents.conversation import FunctionCall, FunctionCallOutput, Item, Message
from duplex.agents.vad import EnergyVAD
from duplex.backends.vllm import VLLMRealtime

from ..cascade.chat_server import Call as ChatCall
from ..cascade.chat_server import ChatServer, Cut, Served, Step, Text
from ..cascade.speech_server import SpeechServer
from ..cascade.vllm_server import VLLMRealtimeServer
from .rig import ReplySpec, Rig, SItem
from .signal import RATE, tagged_samples, transcribe_tone

MISSING = "No result: the call did not complete."


def _sentences(spec: ReplySpec) -> list[tuple[str, int]]:
    """The reply's sentences and each one's audio length (ms)."""
    if spec.drop_after_ms is None:
        return [(spec.text, spec.audio_ms)]
    first = spec.drop_after_ms
    return [
        (f"reply{spec.tag} first part.", first),
        (f"reply{spec.tag} second part.", spec.audio_ms - first),
    ]


def atoms(messages: list[dict[str, Any]]) -> tuple[list[tuple[str, ...]], dict[str, str]]:
    """Chat messages as (kind, ...) atoms in order, and the outputs by call id."""
    seq: list[tuple[str, ...]] = []
    outputs: dict[str, str] = {}
    for m in messages:
        role = m["role"]
        if role == "system":
            continue
        if role == "tool":
            if m["tool_call_id"] in outputs:
                seq.append(("duplicate output", m["tool_call_id"]))
            outputs[m["tool_call_id"]] = m["content"]
            continue
        if m.get("content"):
            seq.append((role, m["content"].strip()))
        for tc in m.get("tool_calls") or []:
            seq.append(("call", tc["id"], tc["function"]["name"], tc["function"]["arguments"]))
    return seq, outputs


def local_atoms(items: tuple[Item, ...]) -> tuple[list[tuple[str, ...]], dict[str, str]]:
    seq: list[tuple[str, ...]] = []
    outputs: dict[str, str] = {}
    calls: list[str] = []
    for it in items:
        if isinstance(it, Message):
            if it.text.strip() and it.role in ("user", "assistant"):
                seq.append((it.role, it.text.strip()))
        elif isinstance(it, FunctionCall):
            seq.append(("call", it.call_id, it.name, it.arguments or "{}"))
            calls.append(it.call_id)
        elif isinstance(it, FunctionCallOutput):
            outputs.setdefault(it.call_id, it.output)
    for call_id in calls:
        outputs.setdefault(call_id, MISSING)
    return seq, {k: v for k, v in outputs.items() if k in calls}


class VLLMRig(Rig):
    name = "vllm"
    input_rate = 24000
    can_drop = True
    server_holds_audio = False

    def __init__(self, make_default: Callable[[], ReplySpec]) -> None:
        self._make_default = make_default
        self.stt = VLLMRealtimeServer(lambda a: transcribe_tone(a, 16000))
        self.chat = ChatServer()
        self.chat.default_script = lambda: self._script(make_default())
        self.chat.on_request = self._snapshot
        self.speech = SpeechServer(synth=self._synth, rate=RATE)
        #: sentence -> (tag, offset ms in its item, ms)
        self._voice: dict[str, tuple[int, int, int]] = {}
        #: (request, local conversation when it arrived)
        self.seen: list[tuple[Served, tuple[Item, ...]]] = []
        self.local: Callable[[], tuple[Item, ...]] = tuple
        self.backend: VLLMRealtime

    async def start(self) -> None:
        await self.stt.start()
        await self.chat.start()
        await self.speech.start()
        self.backend = VLLMRealtime(
            stt_url=self.stt.url,
            llm_url=self.chat.url,
            llm_model=self.chat.model,
            tts_url=self.speech.url,
            tts_sample_rate=RATE,
        )

    async def stop(self) -> None:
        await self.speech.stop()
        await self.chat.stop()
        await self.stt.stop()

    def session_options(self) -> dict[str, Any]:
        return {"vad": EnergyVAD()}

    # --- scripting ------------------------------------------------------------------------
    def _script(self, spec: ReplySpec) -> list[Step]:
        steps: list[Step] = [ChatCall(n, a) for n, a in spec.calls]
        offset = 0
        for i, (text, ms) in enumerate(_sentences(spec) if spec.speaks else []):
            self._voice[text.strip()] = (spec.tag, offset, ms)
            offset += ms
            steps.append(Text(text if i == 0 else " " + text))
            if spec.drop_after_ms is not None:
                steps.append(Cut())  # the server goes away after the first sentence
                break
        return steps

    def _synth(self, text: str) -> bytes:
        tag, offset, ms = self._voice[text.strip()]
        start = RATE * offset // 1000
        return tagged_samples(tag, start, RATE * ms // 1000).astype("<i2").tobytes()

    def attach(self, session: AgentSession) -> None:
        self.local = lambda: session.conversation.items

    def _snapshot(self, served: Served) -> None:
        self.seen.append((served, self.local()))

    def plan(self, spec: ReplySpec) -> None:
        self.chat.script(*self._script(spec))

    def expect_words(self, text: str) -> None:
        pass  # the STT server hears the tones

    # --- the server's truth ---------------------------------------------------------------
    def responses_started(self) -> int:
        return len(self.chat.requests)

    def idle(self) -> bool:
        return all(r.ended.is_set() for r in self.chat.requests)

    def conversation(self) -> list[SItem] | None:
        return None  # no ids on this wire: `check_server` compares each request instead

    def item_tags(self) -> dict[str, int]:
        tags: dict[str, int] = {}
        for it in self.local():
            if isinstance(it, Message) and it.role == "assistant":
                m = re.match(r"reply(\d+)\b", it.text)
                if m:
                    tags[it.id] = int(m.group(1))
        return tags

    def truncations(self) -> list[tuple[str, int]]:
        return []  # a local model: truncation happens in the client's own mirror

    def output_creations(self) -> Counter[str]:
        if not self.chat.requests:
            return Counter()
        _, outputs = atoms(self.chat.requests[-1].body["messages"])
        return Counter(outputs.keys())

    def check_server(self) -> list[str]:
        problems: list[str] = []
        for served, local in self.seen:
            got, got_out = atoms(served.body["messages"])
            want, want_out = local_atoms(local)
            n = self.chat.requests.index(served)
            if got != want:
                problems.append(f"chat request {n}: messages {got} != local conversation {want}")
            if got_out != want_out:
                problems.append(f"chat request {n}: tool outputs {got_out} != local {want_out}")
            dupes = [a for a in got if a[0] == "duplicate output"]
            if dupes:
                problems.append(f"chat request {n}: {dupes}")
        return problems
