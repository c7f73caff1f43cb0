"""The two shapes of the protocol: GA (nested ``audio`` config) and beta ("realtime=v1", flat).

Outgoing payloads are built per dialect; incoming event names are normalised to
the GA family whatever the dialect, since servers that claim one sometimes send
the other (Azure's legacy path, compatible servers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from duplex.agents.tools import FunctionTool

from .options import AudioFormat, DialectName, RealtimeOptions, SemanticVAD, ServerVAD

#: Beta event names and their GA equivalents (receive side).
BETA_TO_GA = {
    "response.audio.delta": "response.output_audio.delta",
    "response.audio.done": "response.output_audio.done",
    "response.audio_transcript.delta": "response.output_audio_transcript.delta",
    "response.audio_transcript.done": "response.output_audio_transcript.done",
    "response.text.delta": "response.output_text.delta",
    "response.text.done": "response.output_text.done",
}

_GA_FORMATS: dict[AudioFormat, dict[str, Any]] = {
    "pcm16": {"type": "audio/pcm", "rate": 24000},
    "g711_ulaw": {"type": "audio/pcmu"},
    "g711_alaw": {"type": "audio/pcma"},
}


def normalize_type(event_type: str) -> str:
    return BETA_TO_GA.get(event_type, event_type)


def _tool_schema(tool: FunctionTool) -> dict[str, Any]:
    return {
        "type": "function",
        "name": tool.name,
        "description": tool.description,
        "parameters": tool.parameters,
    }


def _tool_choice(choice: str) -> str | dict[str, str]:
    if choice in ("auto", "none", "required"):
        return choice
    return {"type": "function", "name": choice}


def _turn_detection(opts: RealtimeOptions, *, ga: bool) -> dict[str, Any] | None:
    td = opts.turn_detection
    if isinstance(td, ServerVAD):
        out: dict[str, Any] = {
            "type": "server_vad",
            "threshold": td.threshold,
            "prefix_padding_ms": td.prefix_padding_ms,
            "silence_duration_ms": td.silence_duration_ms,
            "create_response": td.create_response,
            "interrupt_response": td.interrupt_response,
        }
        if td.idle_timeout_ms is not None and ga:
            out["idle_timeout_ms"] = td.idle_timeout_ms
        return out
    if isinstance(td, SemanticVAD):
        return {
            "type": "semantic_vad",
            "eagerness": td.eagerness,
            "create_response": td.create_response,
            "interrupt_response": td.interrupt_response,
        }
    return None


def _transcription(opts: RealtimeOptions) -> dict[str, Any] | None:
    tr = opts.input_transcription
    if tr is None:
        return None
    out: dict[str, Any] = {"model": tr.model}
    if tr.language:
        out["language"] = tr.language
    if tr.prompt:
        out["prompt"] = tr.prompt
    return out


class Dialect:
    """Builds client payloads for one dialect."""

    name: DialectName = "ga"
    #: Content type of assistant text in items this dialect creates.
    assistant_text_type = "output_text"
    assistant_audio_type = "output_audio"

    def session(
        self, opts: RealtimeOptions, instructions: str, tools: Sequence[FunctionTool]
    ) -> dict[str, Any]:
        audio_in: dict[str, Any] = {
            "format": _GA_FORMATS[opts.input_audio_format],
            "turn_detection": _turn_detection(opts, ga=True),
            "transcription": _transcription(opts),
            "noise_reduction": {"type": opts.noise_reduction} if opts.noise_reduction else None,
        }
        audio_out: dict[str, Any] = {
            "format": _GA_FORMATS[opts.output_audio_format],
            "voice": opts.voice,
        }
        if opts.speed is not None:
            audio_out["speed"] = opts.speed
        return {
            "type": "realtime",
            "model": opts.model,
            "instructions": instructions,
            "output_modalities": [opts.modality],
            "audio": {"input": audio_in, "output": audio_out},
            "tools": [_tool_schema(t) for t in tools],
            "tool_choice": _tool_choice(opts.tool_choice),
            "max_output_tokens": opts.max_output_tokens,
        }

    def instructions_update(self, instructions: str) -> dict[str, Any]:
        return {"type": "realtime", "instructions": instructions}

    def tools_update(self, tools: Sequence[FunctionTool], tool_choice: str) -> dict[str, Any]:
        return {
            "type": "realtime",
            "tools": [_tool_schema(t) for t in tools],
            "tool_choice": _tool_choice(tool_choice),
        }

    def response(
        self,
        opts: RealtimeOptions,
        *,
        instructions: str | None,
        tool_choice: str | None,
        request_id: str,
    ) -> dict[str, Any]:
        out: dict[str, Any] = {"metadata": {"client_event_id": request_id}}
        if instructions is not None:
            out["instructions"] = instructions
        if tool_choice is not None:
            out["tool_choice"] = _tool_choice(tool_choice)
        return out


class BetaDialect(Dialect):
    """The "realtime=v1" preview: flat session, ``pcm16``-style format names."""

    name: DialectName = "beta"
    assistant_text_type = "text"
    assistant_audio_type = "audio"

    def session(
        self, opts: RealtimeOptions, instructions: str, tools: Sequence[FunctionTool]
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": opts.model,
            "instructions": instructions,
            "modalities": ["audio", "text"] if opts.modality == "audio" else ["text"],
            "voice": opts.voice,
            "input_audio_format": opts.input_audio_format,
            "output_audio_format": opts.output_audio_format,
            "input_audio_transcription": _transcription(opts),
            "turn_detection": _turn_detection(opts, ga=False),
            "tools": [_tool_schema(t) for t in tools],
            "tool_choice": opts.tool_choice,
            "max_response_output_tokens": opts.max_output_tokens,
        }
        if opts.noise_reduction:
            out["input_audio_noise_reduction"] = {"type": opts.noise_reduction}
        if opts.temperature is not None:
            out["temperature"] = opts.temperature
        if opts.speed is not None:
            out["speed"] = opts.speed
        return out

    def instructions_update(self, instructions: str) -> dict[str, Any]:
        return {"instructions": instructions}

    def tools_update(self, tools: Sequence[FunctionTool], tool_choice: str) -> dict[str, Any]:
        return {"tools": [_tool_schema(t) for t in tools], "tool_choice": tool_choice}

    def response(
        self,
        opts: RealtimeOptions,
        *,
        instructions: str | None,
        tool_choice: str | None,
        request_id: str,
    ) -> dict[str, Any]:
        out: dict[str, Any] = {"metadata": {"client_event_id": request_id}}
        if instructions is not None:
            out["instructions"] = instructions
        if tool_choice is not None:
            out["tool_choice"] = tool_choice
        return out


def dialect_for(name: DialectName) -> Dialect:
    return BetaDialect() if name == "beta" else Dialect()
