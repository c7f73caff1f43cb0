"""`ScriptedBackend` as a conformance rig: local VAD turns, its mirror as the server."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from duplex.agents.backend import AudioDelta, BackendEvent
from duplex.agents.conversation import Conversation, Create, FunctionCallOutput
from duplex.agents.testing import Reply, ScriptedBackend, ScriptedCall, ScriptedSession
from duplex.agents.tools import FunctionTool
from duplex.agents.vad import EnergyVAD

from .rig import RACES, ReplySpec, Rig, SItem, local_items
from .signal import tag_of_sample


class _Replies(list[Reply]):
    """The backend's reply script; an unplanned request gets a fresh plain reply."""

    def __init__(self, make: Callable[[], Reply]) -> None:
        super().__init__()
        self._make = make

    def __bool__(self) -> bool:
        return True

    def pop(self, index: Any = -1) -> Reply:
        if not len(self):
            return self._make()
        return super().pop(index)


class _TaggingSession(ScriptedSession):
    """Learns which reply (tag) each assistant item carries from the audio it emits."""

    def __init__(self, backend: ScriptedBackend) -> None:
        super().__init__(backend)
        self.item_tag: dict[str, int] = {}
        self.started = 0

    async def events(self) -> AsyncIterator[BackendEvent]:
        async for ev in super().events():
            if isinstance(ev, AudioDelta) and ev.item_id not in self.item_tag:
                self.item_tag[ev.item_id] = tag_of_sample(int(ev.frame.data[0, 0]))
            yield ev


class _Backend(ScriptedBackend):
    async def connect(
        self, *, instructions: str, tools: Sequence[FunctionTool], conversation: Conversation
    ) -> ScriptedSession:
        s = _TaggingSession(self)
        s.instructions = instructions
        s.tools = list(tools)
        await s.sync(conversation)
        self.sessions.append(s)
        return s


class ScriptedRig(Rig):
    name = "scripted"
    input_rate = 24000

    def __init__(self, make_default: Callable[[], ReplySpec]) -> None:
        self._make_default = make_default
        self.backend: _Backend = _Backend()
        self.backend.replies = _Replies(lambda: self._reply(self._make_default()))

    def session_options(self) -> dict[str, Any]:
        return {"vad": EnergyVAD()}

    @property
    def _s(self) -> _TaggingSession:
        s = self.backend.session
        assert isinstance(s, _TaggingSession)
        return s

    def _reply(self, spec: ReplySpec) -> Reply:
        calls = tuple(ScriptedCall(n, a) for n, a in spec.calls)
        if not spec.speaks:
            return Reply(calls=calls)
        return Reply(text=spec.text, audio=self.reply_audio(spec), calls=calls)

    def plan(self, spec: ReplySpec) -> None:
        self.backend.replies.append(self._reply(spec))

    def expect_words(self, text: str) -> None:
        self.backend.user_transcripts.append(text)

    def responses_started(self) -> int:
        return sum(1 for h in self._s.handles if h.created.done() and h.created.exception() is None)

    def idle(self) -> bool:
        return self._s._active is None  # the double's own state: this is the server side

    def conversation(self) -> list[SItem]:
        return local_items(self._s.mirror)

    def item_tags(self) -> dict[str, int]:
        return dict(self._s.item_tag)

    def truncations(self) -> list[tuple[str, int]]:
        return [(c.args["item_id"], c.args["audio_end_ms"]) for c in self._s.called("truncate")]

    def output_creations(self) -> Counter[str]:
        n: Counter[str] = Counter()
        for c in self._s.called("sync"):
            for op in c.args["ops"]:
                if isinstance(op, Create) and isinstance(op.item, FunctionCallOutput):
                    n[op.item.call_id] += 1
        return n

    def check_server(self) -> list[str]:
        return [
            f"server error {e.code}: {e.message}" for e in self._s.errors if e.code not in RACES
        ]
