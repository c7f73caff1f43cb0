"""Mark names for the audio sent to a phone provider, and the positions they confirm.

A media-stream provider buffers the agent's audio and plays it at its own pace;
it echoes a ``mark`` once everything sent before it has been played to the
caller. `MarkTracker` names one mark per chunk sent and remembers the output
stream position (the core `OutputBuffer`'s ``pulled_ms``) it stands for; an echo
gives that position back, for `OutputBuffer.report_played`. The buffer owns the
positions and the pacing; this class only maps names to positions.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict

__all__ = ["MarkTracker"]


class MarkTracker:
    """Marks sent and not yet echoed, in order.

    Names are unique per tracker. After `clear` the echoes of the dropped marks
    (providers return them at once on ``clear``) match nothing, because an echo
    caused by ``clear`` does not mean the audio was heard.
    """

    def __init__(self, prefix: str = "m") -> None:
        self._names = (f"{prefix}{n}" for n in itertools.count(1))
        self._pending: OrderedDict[str, float] = OrderedDict()  # name -> stream position (ms)
        #: Echoes that matched no pending mark (late echoes after ``clear``, or unknown names).
        self.ignored_echoes = 0

    @property
    def pending_marks(self) -> int:
        return len(self._pending)

    def sent(self, position_ms: float) -> str:
        """Audio up to ``position_ms`` was sent; returns the name of the mark to send after it."""
        name = next(self._names)
        self._pending[name] = position_ms
        return name

    def echoed(self, name: str) -> float | None:
        """The provider echoed ``name``: the position played up to, or None if unknown.

        Marks come back in order, so an echo also settles every earlier mark.
        """
        if name not in self._pending:
            self.ignored_echoes += 1
            return None
        while True:
            key, position = self._pending.popitem(last=False)
            if key == name:
                return position

    def clear(self) -> int:
        """Forget every pending mark (their audio was withdrawn); returns how many."""
        n = len(self._pending)
        self._pending.clear()
        return n
