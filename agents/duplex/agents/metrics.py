"""Per-reply latency metrics, computed from the moments `ResponseState` recorded."""

from __future__ import annotations

from collections.abc import Callable

from .events import MetricsCollected, TurnMetrics
from .responses import ResponseState


def _ms(later: float | None, earlier: float | None) -> float | None:
    if later is None or earlier is None:
        return None
    return max(0.0, (later - earlier) * 1000.0)


def turn_metrics(resp: ResponseState) -> TurnMetrics:
    usage = resp.result.usage if resp.result is not None else None
    return TurnMetrics(
        response_id=resp.response_id,
        end_to_end_ms=_ms(resp.first_played_at, resp.speech_end_at),
        backend_ttfa_ms=_ms(resp.first_delta_at, resp.requested_at or resp.started_at),
        interruption_ms=resp.interruption_ms,
        played_ms=resp.played_ms,
        interrupted=resp.interrupted,
        status=resp.result.status if resp.result is not None else "unknown",
        input_tokens=usage.input_tokens if usage else 0,
        output_tokens=usage.output_tokens if usage else 0,
    )


def emit_turn_metrics(emit: Callable[[object], None], resp: ResponseState) -> None:
    resp.metrics_sent = True
    emit(MetricsCollected(turn_metrics(resp)))
