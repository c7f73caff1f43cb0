"""Barge-in: the caller speaks over a reply. Cut it now, or pause it until words decide.

Which replies a barge-in affects is decided here and nowhere else: the replies
whose audio the caller has not fully heard yet (a reply that played to its end
is never touched) and the live one. Each is cut through its own `Reply` verbs
and settled by the session, so only its own items are truncated.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from .events import AgentInterrupted
from .interruption import PendingInterruption, Verdict
from .reply import Reply

if TYPE_CHECKING:
    from .session import AgentSession

_TOLERANCE_MS = 1.0


class BargeIn:
    def __init__(self, session: AgentSession) -> None:
        self.s = session
        self.pending: PendingInterruption | None = None
        self._onset_at: float | None = None
        self._fired = False  # this stretch of speech already interrupted

    # speech ------------------------------------------------------------------------------
    async def speech_started(self, at: float, *, source: str) -> None:
        self._onset_at = at
        self._fired = False
        if self.pending is not None and not self.pending.decided:
            self.pending.speech_resumed()
            return
        if source == "server" or self.s.min_interruption_ms <= 0:
            await self.interrupt(onset_at=at, source=source)

    def continues_due(self, speech_ms: float) -> bool:
        """`speech_continues` would act now (so the input path need not await it otherwise)."""
        ms = self.s.min_interruption_ms
        return ms > 0 and speech_ms >= ms and not self._fired

    async def speech_continues(self, speech_ms: float) -> None:
        ms = self.s.min_interruption_ms
        if ms > 0 and speech_ms >= ms and not self._fired:
            await self.interrupt(onset_at=self._onset_at, source="local")

    def speech_ended(self) -> None:
        self._fired = False
        if self.pending is not None:
            self.pending.speech_ended(self.s.false_interruption_timeout)

    def transcript(self, text: str, final: bool) -> None:
        if self.pending is not None:
            self.pending.on_transcript(text, final)

    async def server_reply_started(self) -> None:
        """The server answered the caller's turn itself: it was a real turn. Cut now, before
        the new reply's audio reaches the playout (a stop later would drop it too)."""
        p = self.pending
        if p is not None and p.decide("real"):
            p.answered = True
            await self._resolve(p, "real")

    async def turn_is_real(self, p: PendingInterruption) -> bool:
        """False when the turn held by ``p`` was a false interruption (the reply resumed)."""
        try:
            verdict = await asyncio.shield(p.verdict)
        except asyncio.CancelledError:
            return False
        await p.finished.wait()  # acted on: a reply asked for now cannot be cut by it
        return verdict == "real"

    def cancel(self) -> None:
        if self.pending is not None:
            self.pending.cancel()
            self.pending = None

    # interruption ------------------------------------------------------------------------
    def _unheard(self, reply: Reply) -> bool:
        playout = self.s.playout
        assert playout is not None
        for item_id in reply.items:
            have = max(reply.received_ms.get(item_id, 0.0), playout.written_ms(item_id))
            if playout.heard_ms(item_id) < have - _TOLERANCE_MS:
                return True
        return False

    def targets(self) -> list[Reply]:
        """Replies a barge-in now cuts: live, or with audio the caller has not heard."""
        return [
            r
            for r in self.s.replies.tracked()
            if not r.interrupted and not r.metrics_sent and (r.live or self._unheard(r))
        ]

    async def interrupt(self, *, onset_at: float | None, source: str) -> None:
        s = self.s
        if source != "api" and not s.allow_interruptions:
            return
        playout = s.playout
        if playout is None:
            return
        pending = self.pending
        if pending is not None and not pending.decided:
            if source == "api":  # stop now: the paused reply is cut, not resumed
                pending.decide("real")
                await pending.finished.wait()
            return
        self._fired = True
        targets = self.targets()
        audible = playout.active and any(self._unheard(r) for r in targets)
        if source != "api" and audible and s.resumes_false_interruptions and playout.pause():
            pending = PendingInterruption(
                targets, onset_at, time.monotonic(), source, requests=list(s.replies.pending)
            )
            self.pending = pending
            s.set_agent_state("listening")
            s.spawn(self._decide(pending), "false-interruption")
            return
        s.replies.cancel_pending()
        if not targets:
            return  # nothing audible; requested replies are cut as soon as they start
        await playout.stop()
        self._cut(targets, onset_at, time.monotonic(), source)

    def _cut(
        self, targets: list[Reply], onset_at: float | None, stopped_at: float, source: str
    ) -> list[asyncio.Task[None]]:
        s = self.s
        playout = s.playout
        assert playout is not None
        latency = 0.0
        for r in targets:
            r.note_heard(playout)
            latency = r.interrupt(onset_at=onset_at, stopped_at=stopped_at)
            s.captions.interrupted(r.items)
        item_id, played = self._cut_item(targets)
        s.emit(AgentInterrupted(item_id, played, latency, resumed=False))
        s.set_agent_state("listening")
        # With interrupt_response the server cancels on the caller's speech itself; a second
        # cancel from us would race its response.done and be refused.
        server_cancels = source != "api" and s.server_interrupts
        return [s.spawn(s.settle(r, cancel=not server_cancels), "settle") for r in targets]

    @staticmethod
    def _cut_item(targets: list[Reply]) -> tuple[str | None, float]:
        """The item the caller was hearing: the first target with something heard."""
        for r in targets:
            item_id, played = r.cut_item()
            if played > 0:
                return item_id, played
        return targets[0].cut_item() if targets else (None, 0.0)

    async def _decide(self, pending: PendingInterruption) -> None:
        try:
            verdict = await pending.verdict
        except asyncio.CancelledError:
            return
        # Off the event path: the cut may wait for its settling, so the reply for this turn
        # (asked for once `finished` is set) is built on a conversation that shows the cut.
        await self._resolve(pending, verdict, settle=True)

    async def _resolve(
        self, pending: PendingInterruption, verdict: Verdict, *, settle: bool = False
    ) -> None:
        if pending.resolved:
            return
        pending.resolved = True
        try:
            await self._act(pending, verdict, settle=settle)
        finally:
            pending.finished.set()

    async def _act(
        self, pending: PendingInterruption, verdict: Verdict, *, settle: bool = False
    ) -> None:
        s = self.s
        playout = s.playout
        assert playout is not None
        if self.pending is pending:
            self.pending = None
        if verdict == "false":
            playout.resume()
            for r in pending.replies:
                r.note_heard(playout)
                if not r.interrupted:
                    r.resume()
            item_id, played = self._cut_item(pending.replies)
            latency = (pending.paused_at - (pending.onset_at or pending.paused_at)) * 1000.0
            s.emit(AgentInterrupted(item_id, played, latency, resumed=True))
            s.set_agent_state("speaking" if playout.active else "listening")
            return
        s.replies.cancel_pending()
        late = [r for r in pending.requests if r.response_id is not None and not r.interrupted]
        targets = [r for r in pending.replies if not r.interrupted] + late
        await playout.stop()
        if targets:
            settling = self._cut(targets, pending.onset_at, pending.paused_at, pending.source)
            if settle:
                await asyncio.gather(*settling, return_exceptions=True)
        if s.caps.server_vad and s.server_replies and not pending.answered:
            # The server did not answer the turn (a reply was still active): ask for one.
            s.spawn(s.reply_for_turn(speech_end_at=s.replies.next_speech_end_at), "barge-in-reply")
