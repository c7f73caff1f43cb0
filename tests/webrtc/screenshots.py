"""Docs screenshots: written by test runs to a scratch folder, copied into docs/img only when
the picture really changed (or ``DUPLEX_UPDATE_SCREENSHOTS=1``), so runs do not churn the repo."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path

DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
#: Share of pixels that must differ (by more than a little) for a change to count.
CHANGED_SHARE = 0.01


def _different(new_png: bytes, old_png: bytes) -> bool:
    try:
        import numpy as np
        from PIL import Image
    except ImportError:  # without Pillow only a byte change can be seen: keep the old one
        return False
    new = np.asarray(Image.open(io.BytesIO(new_png)).convert("RGB"), dtype=np.int16)
    old = np.asarray(Image.open(io.BytesIO(old_png)).convert("RGB"), dtype=np.int16)
    if new.shape != old.shape:
        return True
    moved = (np.abs(new - old).max(axis=2) > 24).mean()
    return bool(moved > CHANGED_SHARE)


def save_screenshot(
    png: bytes,
    name: str,
    scratch: Path,
    *,
    docs_dir: Path = DOCS_IMG,
    env: Mapping[str, str] | None = None,
) -> bool:
    """Keep ``png`` in ``scratch``; replace ``docs_dir/name`` if it changed meaningfully.

    Returns whether the docs image was replaced.
    """
    (scratch / name).write_bytes(png)
    target = docs_dir / name
    forced = (os.environ if env is None else env).get("DUPLEX_UPDATE_SCREENSHOTS") == "1"
    if target.exists() and not forced and not _different(png, target.read_bytes()):
        return False
    docs_dir.mkdir(parents=True, exist_ok=True)
    target.write_bytes(png)
    return True
