"""A barge-in held pending: playback paused until the caller's words decide it.

With ``resume_false_interruption`` the session pauses the output when the caller
starts speaking over a reply. Words transcribed make it a real interruption (the
reply is cut to what was heard); a final transcript without words, or silence for
``false_interruption_timeout`` after the caller stopped, make it a false one (the
reply resumes where it paused and nothing is truncated).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Literal

from .reply import Reply

Verdict = Literal["real", "false"]


@dataclass(eq=False)
class PendingInterruption:
    replies: list[Reply]
    onset_at: float | None
    paused_at: float
    source: str
    #: Replies requested (not started) when it paused: stale if the interruption is real.
    requests: list[Reply] = field(default_factory=list)
    #: The server answered the caller's turn itself (server VAD's create_response).
    answered: bool = False
    verdict: asyncio.Future[Verdict] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    _timer: asyncio.Task[None] | None = None

    @property
    def decided(self) -> bool:
        return self.verdict.done()

    def decide(self, verdict: Verdict) -> bool:
        """Settle the verdict once; True when this call settled it."""
        if self.verdict.done():
            return False
        self.verdict.set_result(verdict)
        if self._timer is not None:
            self._timer.cancel()
        return True

    def on_transcript(self, text: str, final: bool) -> None:
        if text.strip():
            self.decide("real")
        elif final:
            self.decide("false")

    def speech_ended(self, timeout: float) -> None:
        """The caller stopped: without words within ``timeout`` it was a false interruption."""
        if self.decided:
            return
        if self._timer is not None:
            self._timer.cancel()

        async def wait() -> None:
            await asyncio.sleep(timeout)
            self.decide("false")

        self._timer = asyncio.get_running_loop().create_task(wait())

    def speech_resumed(self) -> None:
        """The caller spoke again before the timeout: wait for their next pause."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if not self.verdict.done():
            self.verdict.cancel()
