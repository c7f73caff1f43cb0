"""Kept for round-1 imports: the stage interfaces now live in `duplex.agents.stages`."""

from duplex.agents.stages import (
    LLM,
    STT,
    TTS,
    LLMChunk,
    PartialCallback,
    STTSession,
    STTUtterance,
    TextChunk,
    ToolCallChunk,
    UsageChunk,
)

__all__ = [
    "LLM",
    "STT",
    "TTS",
    "LLMChunk",
    "PartialCallback",
    "STTSession",
    "STTUtterance",
    "TextChunk",
    "ToolCallChunk",
    "UsageChunk",
]
