"""What the phone has really played, from the marks the provider echoes.

A media-stream provider buffers the agent's audio and plays it at its own pace;
it echoes a ``mark`` once everything sent before it has been played to the
caller. `MarkTracker` sends one mark after each chunk and turns the echoes into
`played_ms`, the heard position interruption truncates to. (It is the "played
position reported by the sink" a paced output buffer can consume.)
"""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict

__all__ = ["MarkTracker"]


class MarkTracker:
    """Audio sent, marks pending, and the position the phone confirmed as played.

    Mark names are unique per tracker; after `clear` the echoes of the dropped
    marks (providers return them at once on ``clear``) are ignored, because an
    echo caused by ``clear`` does not mean the audio was heard.
    """

    def __init__(self, prefix: str = "m") -> None:
        self._names = (f"{prefix}{n}" for n in itertools.count(1))
        self._pending: OrderedDict[str, float] = OrderedDict()  # name -> sent_ms at that mark
        self._sent_ms = 0.0
        self._played_ms = 0.0
        self._drained = asyncio.Event()
        self._drained.set()
        self._changed = asyncio.Event()
        #: Echoes that matched no pending mark (late echoes after ``clear``, or unknown names).
        self.ignored_echoes = 0

    @property
    def sent_ms(self) -> float:
        """Milliseconds of audio handed to the provider (minus what `clear` withdrew)."""
        return self._sent_ms

    @property
    def played_ms(self) -> float:
        """Milliseconds the provider confirmed as played to the caller."""
        return self._played_ms

    @property
    def unplayed_ms(self) -> float:
        return self._sent_ms - self._played_ms

    @property
    def pending_marks(self) -> int:
        return len(self._pending)

    def sent(self, ms: float) -> str:
        """Record ``ms`` more audio sent; returns the name of the mark to send after it."""
        self._sent_ms += ms
        name = next(self._names)
        self._pending[name] = self._sent_ms
        self._drained.clear()
        return name

    def echoed(self, name: str) -> bool:
        """The provider echoed ``name``: everything up to it was played. False if unknown."""
        if name not in self._pending:
            self.ignored_echoes += 1
            return False
        # Marks come back in order; an echo also confirms every earlier mark.
        while self._pending:
            key, position = self._pending.popitem(last=False)
            self._played_ms = max(self._played_ms, position)
            if key == name:
                break
        if not self._pending:
            self._drained.set()
        self._changed.set()
        return True

    def clear(self) -> float:
        """Forget the audio not yet confirmed; returns its milliseconds."""
        dropped = self._sent_ms - self._played_ms
        self._pending.clear()
        self._sent_ms = self._played_ms
        self._drained.set()
        self._changed.set()
        return dropped

    def confirm_all(self) -> None:
        """Treat everything sent as played (the stream ended, or marks are not echoed)."""
        self._played_ms = self._sent_ms
        self._pending.clear()
        self._drained.set()
        self._changed.set()

    async def wait_drained(self) -> None:
        await self._drained.wait()

    async def wait_changed(self) -> None:
        """Until the next echo or clear."""
        self._changed.clear()
        await self._changed.wait()
