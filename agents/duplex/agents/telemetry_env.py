"""Whether the environment asks for OpenTelemetry export (no OpenTelemetry import needed)."""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["telemetry_wanted"]

_VARS = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
)


def telemetry_wanted(environ: Mapping[str, str] | None = None) -> bool:
    """True when an OTLP endpoint is configured with the standard OTEL_* variables."""
    env = os.environ if environ is None else environ
    return any(env.get(name) for name in _VARS)
