"""Finding the Smart Turn ONNX file inside the installed ``pipecat-ai`` wheel, and loading it.

The file is located through the distribution's file list (`importlib.metadata`),
so pipecat itself is never imported: its ``__init__`` configures loguru and pulls
in much of the framework.
"""

from __future__ import annotations

import importlib.metadata
import re
import threading
from pathlib import Path

import numpy as np
import onnxruntime

from duplex.agents.errors import ConfigurationError

_DISTRIBUTION = "pipecat-ai"
_DATA_DIR = "pipecat/audio/turn/smart_turn/data/"
#: ``smart-turn-v3.2-cpu.onnx`` and later minor versions; the newest wins.
_NAME = re.compile(r"smart-turn-v3\.(\d+)-cpu\.onnx$")

_lock = threading.Lock()
_sessions: dict[Path, onnxruntime.InferenceSession] = {}


def bundled_model_path() -> Path | None:
    """The newest ``smart-turn-v3.x-cpu.onnx`` in the installed pipecat-ai wheel, or None."""
    try:
        dist = importlib.metadata.distribution(_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    best: tuple[int, Path] | None = None
    for f in dist.files or ():
        posix = f.as_posix()
        if not posix.startswith(_DATA_DIR):
            continue
        m = _NAME.search(posix)
        if m is None:
            continue
        path = Path(str(dist.locate_file(f)))
        if path.is_file() and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), path)
    return best[1] if best else None


def resolve_model_path(model_path: str | Path | None) -> Path:
    if model_path is not None:
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise ConfigurationError(f"Smart Turn model not found at {str(path)!r}")
        return path.resolve()
    found = bundled_model_path()
    if found is None:
        raise ConfigurationError(
            "Smart Turn model not found: install it with `pip install duplex-agents[smart_turn]` "
            "(it ships in the pipecat-ai wheel), or pass model_path= to a smart-turn-v3 .onnx"
        )
    return found.resolve()


def shared_session(path: Path, threads: int = 1) -> onnxruntime.InferenceSession:
    """One session per model file per process.

    One intra-op thread by default: the whole process shares one inference worker,
    and a second thread would take a core from the speech models for ~10 ms gain.
    Loaded with full graph optimisation (half the time of the basic level here) and
    run once at load, so the first caller's pause does not pay for the warm-up.
    """
    with _lock:
        sess = _sessions.get(path)
        if sess is None:
            opts = onnxruntime.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            opts.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
            opts.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            try:
                sess = onnxruntime.InferenceSession(
                    str(path), sess_options=opts, providers=["CPUExecutionProvider"]
                )
            except Exception as e:  # onnxruntime raises its own untyped errors
                raise ConfigurationError(f"cannot load Smart Turn model {str(path)!r}: {e}") from e
            names = {i.name for i in sess.get_inputs()}
            if "input_features" not in names:
                raise ConfigurationError(
                    f"{str(path)!r} is not a Smart Turn v3 model (inputs {sorted(names)})"
                )
            # The first run allocates and plans; do it now, not on a caller's first pause.
            sess.run(None, {"input_features": np.zeros((1, 80, 800), np.float32)})
            _sessions[path] = sess
        return sess
