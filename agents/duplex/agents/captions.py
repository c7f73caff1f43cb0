"""The agent's captions: streaming text, then one final per item that matches what was heard.

After a barge-in the server may still finish an item with its full text; that
text was never heard, so its final caption waits for the cut version (or is
empty when the item was deleted unheard).
"""

from __future__ import annotations

from collections.abc import Iterable

from .conversation import Message
from .events import AgentTranscribed


class Captions:
    def __init__(self) -> None:
        self._streamed: dict[str, str] = {}
        #: Items of interrupted replies whose heard-only text has not arrived yet.
        self._cut_pending: set[str] = set()

    def delta(self, item_id: str, text: str) -> AgentTranscribed:
        so_far = self._streamed.get(item_id, "") + text
        self._streamed[item_id] = so_far
        return AgentTranscribed(item_id, so_far, False)

    def interrupted(self, item_ids: Iterable[str]) -> None:
        self._cut_pending.update(item_ids)

    def final(self, item: Message) -> AgentTranscribed | None:
        """The final caption for a completed item, or None while its cut is still to come."""
        if item.id in self._cut_pending:
            if item.truncated_ms is None:
                return None
            self._cut_pending.discard(item.id)
        self._streamed.pop(item.id, None)
        return AgentTranscribed(item.id, item.text, True)

    def release(self, item: Message) -> AgentTranscribed | None:
        """An item of a cut reply that was heard in full: its caption is its whole text."""
        if item.id not in self._cut_pending or not item.complete:
            self._cut_pending.discard(item.id)
            return None
        return self.settled(item.id, item.text)

    def settled(self, item_id: str, heard_text: str) -> AgentTranscribed:
        """The cut is done without a server update (deleted unheard, or no truncation)."""
        self._cut_pending.discard(item_id)
        self._streamed.pop(item_id, None)
        return AgentTranscribed(item_id, heard_text, True)
