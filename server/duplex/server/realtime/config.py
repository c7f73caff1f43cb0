"""Session configuration: the client's ``session.update`` merged into a dict, and views of it.

The dict is kept in the client's dialect (GA nests audio settings, beta is flat), so
``session.updated`` echoes exactly the shape the client's SDK validates; the views
below give the rest of the server one dialect-free reading of it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

from .errors import ProtocolError, unsupported
from .protocol import Dialect

AudioFormat = Literal["pcm16", "g711_ulaw", "g711_alaw"]
_GA_FORMATS: dict[str, AudioFormat] = {
    "audio/pcm": "pcm16",
    "audio/pcmu": "g711_ulaw",
    "audio/pcma": "g711_alaw",
}
#: Fields an update replaces as a whole; the others merge key by key.
_WHOLE = {"format", "turn_detection", "transcription", "noise_reduction", "tool_choice"}
#: semantic_vad has no silence setting; its eagerness picks one (the service waits longer
#: on "low"). The cascade has no semantic end-of-turn model, so this is the emulation.
_EAGERNESS_SILENCE_MS = {"low": 1200, "medium": 700, "auto": 700, "high": 400}


@dataclass(frozen=True)
class TurnDetection:
    """server_vad's options, whichever dialect or VAD type set them."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    create_response: bool = True
    interrupt_response: bool = True


def _merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict) and k not in _WHOLE:
            _merge(into[k], v)
        else:
            into[k] = copy.deepcopy(v)


def _default_vad() -> dict[str, Any]:
    return {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 500,
        "create_response": True,
        "interrupt_response": True,
    }


class SessionConfig:
    def __init__(self, dialect: Dialect, *, model: str, instructions: str, voice: str) -> None:
        self.dialect = dialect
        if dialect == "ga":
            self.raw: dict[str, Any] = {
                "type": "realtime",
                "model": model,
                "instructions": instructions,
                "output_modalities": ["audio"],
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "transcription": None,
                        "turn_detection": _default_vad(),
                    },
                    "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": voice},
                },
                "tools": [],
                "tool_choice": "auto",
                "max_output_tokens": "inf",
            }
        else:
            self.raw = {
                "model": model,
                "instructions": instructions,
                "modalities": ["text", "audio"],
                "voice": voice,
                "input_audio_format": "pcm16",
                "output_audio_format": "pcm16",
                "input_audio_transcription": None,
                "turn_detection": _default_vad(),
                "tools": [],
                "tool_choice": "auto",
                "temperature": 0.8,
                "max_response_output_tokens": "inf",
            }

    # --- update -------------------------------------------------------------------------
    def update(self, session: dict[str, Any]) -> None:
        """Apply ``session.update``; refuses what the cascade cannot do before changing anything."""
        if self.dialect == "ga" and session.get("type") == "transcription":
            raise unsupported(
                "A transcription session (session.type 'transcription')", param="session.type"
            )
        self._check_tools(session.get("tools") or [])
        td = self._in_of(session).get("turn_detection") if session else None
        if isinstance(td, dict) and td.get("type") not in (None, "server_vad", "semantic_vad"):
            raise ProtocolError(
                "invalid_value", "Unknown turn_detection type.", param="session.turn_detection.type"
            )
        if self.dialect == "beta" and isinstance(td, dict) and "type" not in td:
            td["type"] = "server_vad"
        _merge(self.raw, session)

    @staticmethod
    def _check_tools(tools: list[dict[str, Any]]) -> None:
        for i, tool in enumerate(tools):
            if tool.get("type", "function") != "function":
                raise unsupported(
                    "MCP and other non-function tools", param=f"session.tools[{i}].type"
                )
            if not tool.get("name"):
                raise ProtocolError(
                    "missing_required_parameter",
                    "Missing required parameter: tool name.",
                    param=f"session.tools[{i}].name",
                )

    def _in_of(self, session: dict[str, Any]) -> dict[str, Any]:
        if self.dialect == "beta":
            return session
        audio = session.get("audio") or {}
        return audio.get("input") or {}

    # --- views --------------------------------------------------------------------------
    def echo(self, session_id: str) -> dict[str, Any]:
        """The session object of ``session.created`` / ``session.updated``."""
        out = copy.deepcopy(self.raw)
        if self.dialect == "beta":
            # The beta schema only admits OpenAI's model names; ours is in the URL's ?model=.
            out.pop("model", None)
            out = {"id": session_id, **out}
        return out

    @property
    def _input(self) -> dict[str, Any]:
        return self._in_of(self.raw)

    @property
    def _output(self) -> dict[str, Any]:
        return self.raw if self.dialect == "beta" else self.raw["audio"].get("output") or {}

    def _format(self, side: Literal["input", "output"]) -> AudioFormat:
        if self.dialect == "beta":
            fmt = self.raw.get(f"{side}_audio_format") or "pcm16"
            return format_name(fmt)
        return format_name((self._input if side == "input" else self._output).get("format"))

    @property
    def input_format(self) -> AudioFormat:
        return self._format("input")

    @property
    def output_format(self) -> AudioFormat:
        return self._format("output")

    @property
    def instructions(self) -> str:
        return str(self.raw.get("instructions") or "")

    @property
    def voice(self) -> str:
        v = self._output.get("voice")
        return str(v.get("id") if isinstance(v, dict) else v or "")

    @property
    def audio_out(self) -> bool:
        mods = self.raw.get("output_modalities" if self.dialect == "ga" else "modalities")
        return mods is None or "audio" in mods

    @property
    def transcription(self) -> dict[str, Any] | None:
        key = "transcription" if self.dialect == "ga" else "input_audio_transcription"
        value = self._input.get(key)
        return value if isinstance(value, dict) else None

    @property
    def turn_detection(self) -> TurnDetection | None:
        td = self._input.get("turn_detection")
        if not isinstance(td, dict):
            return None
        base = TurnDetection()
        silence = td.get("silence_duration_ms")
        if td.get("type") == "semantic_vad":
            silence = _EAGERNESS_SILENCE_MS.get(td.get("eagerness") or "auto", 700)
        return TurnDetection(
            threshold=float(td.get("threshold") or base.threshold),
            prefix_padding_ms=int(td.get("prefix_padding_ms") or base.prefix_padding_ms),
            silence_duration_ms=int(silence or base.silence_duration_ms),
            create_response=td.get("create_response") is not False,
            interrupt_response=td.get("interrupt_response") is not False,
        )

    @property
    def tools(self) -> list[dict[str, Any]]:
        return list(self.raw.get("tools") or [])

    @property
    def tool_choice(self) -> str | None:
        return tool_choice_name(self.raw.get("tool_choice"))


def format_name(value: Any, default: AudioFormat = "pcm16") -> AudioFormat:
    """A GA format object (``{"type": "audio/pcmu"}``) or a beta name, as one name."""
    if isinstance(value, dict):
        value = _GA_FORMATS.get(str(value.get("type")), default)
    if value in ("pcm16", "g711_ulaw", "g711_alaw"):
        return value  # type: ignore[no-any-return]
    return default


def tool_choice_name(choice: Any) -> str | None:
    """``auto``/``none``/``required``, or the name of the one function to call."""
    if choice is None or isinstance(choice, str):
        return choice
    if isinstance(choice, dict):
        if choice.get("type") == "function" and choice.get("name"):
            return str(choice["name"])
        if choice.get("type") == "mcp":
            raise unsupported("An MCP tool_choice", param="tool_choice")
    raise ProtocolError("invalid_value", "Invalid tool_choice.", param="tool_choice")
