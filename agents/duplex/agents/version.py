"""The installed distribution's version, read from its metadata (one source: pyproject.toml)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__: str = version("duplex-agents")
except PackageNotFoundError:  # pragma: no cover - running from a source tree never installed
    __version__ = "0.0.0+unknown"
