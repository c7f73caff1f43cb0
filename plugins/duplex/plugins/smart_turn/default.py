"""The turn options a command gives a session that names none: Smart Turn when installed.

`duplex.agents.app` finds `default_turn_options` through the ``duplex.turn_models``
entry point, so the core never imports this plugin. ``DUPLEX_SMART_TURN_MODEL``
overrides the model: a path to a ``smart-turn-v3*.onnx``, or ``off`` for the
silence rule (also what you get when the pipecat-ai wheel is not installed).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from duplex.agents.vad import TurnOptions

from ._model import bundled_model_path
from .model import SmartTurn

log = logging.getLogger(__name__)

#: Environment variable: a model path, or ``off`` / empty to keep the silence rule.
MODEL_ENV = "DUPLEX_SMART_TURN_MODEL"
_OFF = {"", "0", "off", "none", "false", "no"}

#: Silence (as the VAD reports it) after which the default asks the model. WebRTC's VAD
#: already holds "voiced" ~100 ms past the last word, so 100 ms here is ~200 ms of real
#: quiet, the pause pipecat asks the model after.
DEFAULT_PAUSE_MS = 100.0


def configured_model_path() -> Path | None:
    """The model the default uses: ``$DUPLEX_SMART_TURN_MODEL``, else the bundled one, or None.

    A path that does not exist is None (and logged): the default must never stop a
    command from starting; ``SmartTurn(model_path=...)`` given directly still raises.
    """
    value = os.environ.get(MODEL_ENV)
    if value is None:
        return bundled_model_path()
    if value.strip().lower() in _OFF:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        log.warning("%s=%r is not a file; ignoring it", MODEL_ENV, value)
        return None
    return path


def default_turn_options() -> TurnOptions | None:
    """`TurnOptions` with Smart Turn as the end-of-turn model, or None when it is absent."""
    path = configured_model_path()
    if path is None:
        return None
    return TurnOptions(end_of_turn=SmartTurn(path), end_of_turn_pause_ms=DEFAULT_PAUSE_MS)
