"""What a live realtime session may change, and the options it changes to.

Kept apart from the session so the rules (voice only before the first audio,
temperature only on the beta dialect) are read in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

from duplex.agents.backend import UNCHANGED, ToolChoice
from duplex.agents.conversation import Item, Message
from duplex.agents.errors import ConfigurationError

from .options import RealtimeOptions, SemanticVAD, ServerVAD


def changed_options(
    opts: RealtimeOptions,
    items: Sequence[Item],
    *,
    voice: str | None = None,
    turn_detection: Any = UNCHANGED,
    temperature: float | None = None,
    tool_choice: ToolChoice | None = None,
    max_output_tokens: int | Literal["inf"] | None = None,
    modalities: Sequence[str] | None = None,
    server_interrupts: bool | None = None,
) -> RealtimeOptions | None:
    """The validated new options, or None when nothing changes.

    Raises `ConfigurationError` for a change the service would refuse: a new voice
    once the session has produced audio, a temperature on the GA dialect, a value
    out of range.
    """
    changes: dict[str, Any] = {}
    if voice is not None and voice != opts.voice:
        if any(
            isinstance(it, Message) and it.role == "assistant" and it.audio_ms > 0 for it in items
        ):
            raise ConfigurationError("the voice cannot change once the session has spoken")
        changes["voice"] = voice
    if turn_detection is not UNCHANGED:
        changes["turn_detection"] = turn_detection
    if temperature is not None:
        changes["temperature"] = temperature
    if tool_choice is not None:
        changes["tool_choice"] = tool_choice
    if max_output_tokens is not None:
        changes["max_output_tokens"] = max_output_tokens
    if modalities is not None:
        changes["modality"] = "audio" if "audio" in modalities else "text"
    if server_interrupts is not None:
        td = changes.get("turn_detection", opts.turn_detection)
        if isinstance(td, (ServerVAD, SemanticVAD)):
            changes["turn_detection"] = replace(td, interrupt_response=server_interrupts)
    if not changes:
        return None
    new = replace(opts, **changes)
    new.validate()
    return new
