"""Smart Turn v3: an audio model that says whether the caller finished their turn.

pipecat's Smart Turn v3.x (a Whisper-Tiny encoder with a linear head, ~8 MB,
BSD-2-Clause) ships inside the ``pipecat-ai`` wheel; this plugin finds the file
there without importing pipecat and runs it with onnxruntime. Give it to the
turn detector: ``TurnOptions(end_of_turn=SmartTurn())``.
"""

from __future__ import annotations

from ._model import bundled_model_path
from .default import (
    MODEL_ENV,
    TEXT_ENV,
    configured_model_path,
    default_turn_options,
    smart_turn_options,
)
from .model import SmartTurn
from .queue import EndOfTurnBusyError, InferenceQueue, shared_queue
from .text import SmartTurnText, TextScorer, TurnVerdict, shared_text_queue

__all__ = [
    "MODEL_ENV",
    "TEXT_ENV",
    "EndOfTurnBusyError",
    "InferenceQueue",
    "SmartTurn",
    "SmartTurnText",
    "TextScorer",
    "TurnVerdict",
    "bundled_model_path",
    "configured_model_path",
    "default_turn_options",
    "shared_queue",
    "shared_text_queue",
    "smart_turn_options",
]
