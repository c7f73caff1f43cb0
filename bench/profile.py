"""py-spy over a running worker: record, then rank functions by own and total samples.

py-spy's raw output is one line per distinct stack, ``frame;frame;...;frame count``
(outermost first); idle threads are not sampled, so samples are CPU time.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^():]+)(?::\d+)?\)$")
_SITE = re.compile(r".*/site-packages/")


@dataclass(frozen=True)
class Cost:
    function: str
    own_pct: float
    total_pct: float


def py_spy() -> str | None:
    here = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def start(pid: int, seconds: float, out: Path, rate: int = 100) -> subprocess.Popen[str]:
    """Sample ``pid`` for ``seconds`` in the background, without pausing it."""
    cmd = [
        py_spy() or "py-spy",
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, int(seconds))),
        "--rate",
        str(rate),
        "--format",
        "raw",
        "--nonblocking",
        "--full-filenames",
        "--output",
        str(out),
    ]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)


def _name(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if m is None:
        return frame.strip()
    path = _SITE.sub("", m.group("file"))
    for root in ("/agents/", "/backends/", "/plugins/", "/bench/"):
        if root in path:
            path = path[path.index(root) + 1 :]
            break
    else:
        path = (
            path.rsplit("/lib/python3", 1)[-1].split("/", 1)[-1] if "/lib/python3" in path else path
        )
    return f"{path}:{m.group('func')}"


def _owner(name: str) -> str | None:
    """The layer a frame belongs to: duplex's core, backends, plugins, or the harness."""
    for root, label in (
        ("agents/", "core"),
        ("backends/", "backend"),
        ("plugins/", "plugin"),
        ("bench/", "harness"),
    ):
        if name.startswith(root):
            return label
    return None


def rank(raw: str, top: int = 15) -> tuple[int, list[Cost], list[Cost]]:
    """(samples, by own time, by time under each duplex or harness function) from raw text.

    The second list charges every sample to the innermost duplex (or harness) frame on
    its stack, so a function's figure includes the library calls it makes (a socket
    write, a resampler) but not the duplex functions it calls.
    """
    own: Counter[str] = Counter()
    charged: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = [_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        own[frames[-1]] += n
        for name in set(frames):
            total[name] += n
        mine = [f for f in frames if _owner(f) is not None and not f.startswith("bench/worker")]
        charged[mine[-1] if mine else "(asyncio event loop and other)"] += n
    if samples == 0:
        return 0, [], []

    def cost(name: str, counter: Counter[str]) -> Cost:
        return Cost(name, 100.0 * counter[name] / samples, 100.0 * total[name] / samples)

    by_layer: Counter[str] = Counter()
    for name, n in charged.items():
        by_layer[_owner(name) or "event loop and other"] += n
    by_own = [cost(name, own) for name, _ in own.most_common(top)]
    by_own.extend(
        Cost(f"[layer] {layer}", 100.0 * n / samples, 100.0 * n / samples)
        for layer, n in by_layer.most_common()
    )
    by_charge = [
        Cost(name, 100.0 * n / samples, 100.0 * total[name] / samples)
        for name, n in charged.most_common(top)
    ]
    return samples, by_own, by_charge


def markdown(samples: int, by_own: list[Cost], by_charge: list[Cost], seconds: float) -> str:
    layers = [c for c in by_own if c.function.startswith("[layer] ")]
    leaves = [c for c in by_own if not c.function.startswith("[layer] ")]
    split = ", ".join(f"{c.function[8:]} {c.own_pct:.0f}%" for c in layers)
    lines = [
        f"{samples} samples over {seconds:.0f} s at 100 Hz (py-spy counts a sample only "
        "when the thread is busy).",
        "",
        f"By layer (innermost duplex or harness frame, library calls included): {split}.",
        "",
        "Where the time is spent (the innermost frame, library code included):",
        "",
        "| own % | function |",
        "|---:|---|",
    ]
    lines += [f"| {c.own_pct:.1f} | `{c.function}` |" for c in leaves]
    lines += [
        "",
        "Who spends it: each sample charged to the innermost duplex (agents/, backends/, "
        "plugins/) or harness (bench/) function on its stack, with the library calls it "
        "makes; `total` also counts the duplex functions it calls.",
        "",
        "| charged % | total % | function |",
        "|---:|---:|---|",
    ]
    lines += [f"| {c.own_pct:.1f} | {c.total_pct:.1f} | `{c.function}` |" for c in by_charge]
    return "\n".join(lines)
