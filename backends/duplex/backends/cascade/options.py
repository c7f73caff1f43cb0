"""Options a cascade session changes live: what its next completion is asked with."""

from __future__ import annotations

import inspect
from typing import Any

from duplex.agents.backend import UNCHANGED, ToolChoice
from duplex.agents.errors import ConfigurationError
from duplex.agents.stages import LLM

#: update_options name -> the LLM stage's keyword.
_LLM_KEYS = {"temperature": "temperature", "max_output_tokens": "max_tokens"}


def llm_options(
    llm: LLM,
    current: dict[str, Any],
    tool_choice: ToolChoice | None,
    changes: dict[str, Any],
) -> tuple[dict[str, Any], ToolChoice | None]:
    """The new per-session LLM options and default tool choice after ``changes``."""
    given = {k: v for k, v in changes.items() if v is not None and v is not UNCHANGED}
    out = dict(current)
    accepted = inspect.signature(llm.stream).parameters
    for name, value in given.items():
        if name == "tool_choice":
            tool_choice = value
        elif name == "server_interrupts":
            continue  # no server VAD here: the session's own VAD decides
        elif name == "modalities":
            if "audio" not in value:
                raise ConfigurationError("the cascade always speaks: modalities must hold audio")
        elif name in _LLM_KEYS:
            key = _LLM_KEYS[name]
            if key not in accepted:
                raise ConfigurationError(f"{type(llm).__name__} takes no {key} per completion")
            if value == "inf":
                out.pop(key, None)
            else:
                out[key] = value
        else:
            raise ConfigurationError(
                f"the cascade cannot change {name} live (the voice is the TTS stage's, turns "
                "are the local VAD's)"
            )
    return out, tool_choice
