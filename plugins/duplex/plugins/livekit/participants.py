"""Which remote participant the agent listens to, and when to move to another one.

The agent follows one caller at a time: the one named by identity, or else the
first to join among the allowed kinds (people and phone callers by default, not
other agents or recorders). When it leaves, the next matching one is followed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from duplex.agents.errors import ConfigurationError
from livekit import rtc

Kind: TypeAlias = "rtc.ParticipantKind.ValueType"

KINDS: dict[str, Kind] = {
    "standard": rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD,
    "sip": rtc.ParticipantKind.PARTICIPANT_KIND_SIP,
    "connector": rtc.ParticipantKind.PARTICIPANT_KIND_CONNECTOR,
    "ingress": rtc.ParticipantKind.PARTICIPANT_KIND_INGRESS,
    "egress": rtc.ParticipantKind.PARTICIPANT_KIND_EGRESS,
    "agent": rtc.ParticipantKind.PARTICIPANT_KIND_AGENT,
}
#: People in a browser or app, phone callers, and telephony connectors.
DEFAULT_KINDS: tuple[Kind, ...] = (KINDS["standard"], KINDS["sip"], KINDS["connector"])


def parse_kinds(names: str | Iterable[str]) -> tuple[Kind, ...]:
    """``"standard,sip"`` -> kinds; unknown names are a configuration error, not ignored."""
    items = names.split(",") if isinstance(names, str) else list(names)
    out: list[Kind] = []
    for raw in items:
        name = raw.strip().lower()
        if not name:
            continue
        if name not in KINDS:
            raise ConfigurationError(
                f"unknown participant kind {raw!r}; choose from {', '.join(KINDS)}"
            )
        out.append(KINDS[name])
    if not out:
        raise ConfigurationError("at least one participant kind is needed")
    return tuple(out)


def kind_name(kind: Kind) -> str:
    for name, value in KINDS.items():
        if value == kind:
            return name
    return f"kind-{int(kind)}"


@dataclass(frozen=True)
class ParticipantFilter:
    """Who may be followed: an exact identity, and/or a set of participant kinds."""

    identity: str | None = None
    kinds: Sequence[Kind] = DEFAULT_KINDS

    def matches(self, participant: rtc.Participant) -> bool:
        if self.identity is not None and participant.identity != self.identity:
            return False
        return participant.kind in self.kinds


class ParticipantTracker:
    """Keeps the followed participant; the room transport asks it on every join and leave."""

    def __init__(self, filter: ParticipantFilter | None = None) -> None:
        self.filter = filter or ParticipantFilter()
        self.current: rtc.RemoteParticipant | None = None

    def pick(self, participants: Iterable[rtc.RemoteParticipant]) -> rtc.RemoteParticipant | None:
        """The participant to follow now; keeps the current one while it is present.

        ``participants`` is in join order (the SDK keeps its map in arrival order),
        so "first" means the longest-present matching participant.
        """
        present = [p for p in participants if self.filter.matches(p)]
        if self.current is not None and any(p is self.current for p in present):
            return self.current
        if self.current is not None:
            # the same identity may come back as a new object after a reconnect
            same = [p for p in present if p.identity == self.current.identity]
            if same:
                self.current = same[0]
                return self.current
        self.current = present[0] if present else None
        return self.current

    def left(self, participant: rtc.RemoteParticipant) -> bool:
        """True when the followed participant is the one that left."""
        if self.current is not None and participant.identity == self.current.identity:
            self.current = None
            return True
        return False
