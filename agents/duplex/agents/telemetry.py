"""OpenTelemetry for sessions: a trace per call, metrics per process (the ``otel`` extra).

Driven only by the session's public events, so the session itself knows nothing of it::

    telemetry = SessionTelemetry()          # global tracer/meter providers by default
    telemetry.attach(session)               # before session.start(...)

Spans: ``duplex.session`` (the call) with children ``duplex.backend.connect`` (until
the session listens), ``duplex.turn`` (the caller's turn until the agent listens again)
and under each turn ``duplex.reply`` (one per response, with its latencies, tokens and
whether it was cut off) and ``duplex.tool`` (one per tool call, with its duration).

Metrics: ``duplex.turn.latency`` (caller's end of speech -> first reply audio, ms),
``duplex.reply.backend_ttfa``, ``duplex.interruption.latency``, ``duplex.tool.duration``
histograms; ``duplex.replies``, ``duplex.interruptions``, ``duplex.errors``,
``duplex.tool.calls``, ``duplex.tokens`` counters; ``duplex.sessions.active``.
`setup_telemetry` wires OTLP (from the standard ``OTEL_EXPORTER_OTLP_*`` variables) and a
Prometheus endpoint.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .conversation import Message
from .errors import ConfigurationError
from .events import (
    AgentInterrupted,
    AgentStateChanged,
    ConversationItemAdded,
    MetricsCollected,
    SessionClosed,
    SessionError,
    ToolCalled,
    ToolExecuted,
    UserStateChanged,
)

if TYPE_CHECKING:
    from .session import AgentSession
    from .transport import Transport

__all__ = ["SessionTelemetry", "TelemetrySetup", "setup_telemetry"]

log = logging.getLogger(__name__)


def _otel() -> tuple[Any, Any, Any]:
    try:
        from opentelemetry import metrics, trace
        from opentelemetry.trace import Status, StatusCode
    except ModuleNotFoundError as e:
        raise ConfigurationError(
            "telemetry needs OpenTelemetry: pip install 'duplex-agents[otel]'"
        ) from e
    return trace, metrics, (Status, StatusCode)


class _Instruments:
    def __init__(self, meter: Any) -> None:
        ms = "ms"
        self.turn_latency = meter.create_histogram(
            "duplex.turn.latency", unit=ms, description="caller's end of speech to first audio"
        )
        self.backend_ttfa = meter.create_histogram(
            "duplex.reply.backend_ttfa", unit=ms, description="reply requested to first audio"
        )
        self.interruption_latency = meter.create_histogram(
            "duplex.interruption.latency", unit=ms, description="caller's onset to silence"
        )
        self.tool_duration = meter.create_histogram("duplex.tool.duration", unit=ms)
        self.replies = meter.create_counter("duplex.replies", description="replies by status")
        self.interruptions = meter.create_counter("duplex.interruptions")
        self.errors = meter.create_counter("duplex.errors", description="session errors by code")
        self.tool_calls = meter.create_counter("duplex.tool.calls")
        self.tokens = meter.create_counter("duplex.tokens", description="by direction")
        self.active = meter.create_up_down_counter(
            "duplex.sessions.active", description="calls in progress"
        )
        self.active.add(0)  # exported (as 0) before the first call


@dataclass
class _CallState:
    session_span: Any
    connect_span: Any | None
    turn_span: Any | None = None
    reply_start_ns: int | None = None
    replies_in_turn: int = 0
    agent_listening: bool = False
    tools: dict[str, Any] = field(default_factory=dict)


class SessionTelemetry:
    """Traces and measures every session it is attached to (one instance serves many)."""

    def __init__(
        self,
        *,
        tracer_provider: Any | None = None,
        meter_provider: Any | None = None,
        backend_name: str | None = None,
    ) -> None:
        trace, metrics, (self._Status, self._StatusCode) = _otel()
        self._trace = trace
        self._tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer("duplex")
        meter = (meter_provider or metrics.get_meter_provider()).get_meter("duplex")
        self._m = _Instruments(meter)
        self.backend_name = backend_name

    def prepare(self, session: AgentSession, transport: Transport) -> None:
        """The `AppSpec.start` hook form of `attach`."""
        self.attach(session)

    def attach(self, session: AgentSession) -> None:
        """Subscribe to ``session``; call before ``session.start`` to time the connection."""
        backend = self.backend_name or type(session.backend).__name__
        root = self._tracer.start_span(
            "duplex.session",
            attributes={"duplex.session.id": session.id, "duplex.backend": backend},
        )
        ctx = self._trace.set_span_in_context(root)
        connect = self._tracer.start_span(
            "duplex.backend.connect", context=ctx, attributes={"duplex.backend": backend}
        )
        state = _CallState(root, connect)
        self._m.active.add(1)
        on = session.on
        on(AgentStateChanged, lambda e: self._on_agent_state(state, e))
        on(UserStateChanged, lambda e: self._on_user_state(state, e))
        on(ConversationItemAdded, lambda e: self._on_item(state, e))
        on(MetricsCollected, lambda e: self._on_metrics(state, e))
        on(ToolCalled, lambda e: self._on_tool_called(state, e))
        on(ToolExecuted, lambda e: self._on_tool_executed(state, e))
        on(AgentInterrupted, lambda e: self._on_interrupted(state, e))
        on(SessionError, lambda e: self._on_error(state, e))
        on(SessionClosed, lambda e: self._on_closed(state, e))

    # turns ------------------------------------------------------------------------------
    def _open_turn(self, state: _CallState, source: str) -> None:
        if state.turn_span is not None:
            self._end_turn(state)
        ctx = self._trace.set_span_in_context(state.session_span)
        state.turn_span = self._tracer.start_span(
            "duplex.turn", context=ctx, attributes={"duplex.turn.source": source}
        )
        state.replies_in_turn = 0
        state.reply_start_ns = None
        state.agent_listening = False

    def _end_turn(self, state: _CallState) -> None:
        if state.turn_span is not None:
            state.turn_span.set_attribute("duplex.turn.replies", state.replies_in_turn)
            state.turn_span.end()
            state.turn_span = None

    def _maybe_end_turn(self, state: _CallState) -> None:
        """The turn is over once the agent listens again with no reply or tool outstanding."""
        if (
            state.turn_span is not None
            and state.agent_listening
            and state.replies_in_turn > 0
            and state.reply_start_ns is None
            and not state.tools
        ):
            self._end_turn(state)

    # event handlers -----------------------------------------------------------------------
    def _on_agent_state(self, state: _CallState, ev: AgentStateChanged) -> None:
        if ev.new == "listening" and state.connect_span is not None:
            state.connect_span.end()
            state.connect_span = None
        if ev.new in ("thinking", "speaking") and state.reply_start_ns is None:
            state.reply_start_ns = time.time_ns()
        state.agent_listening = ev.new == "listening"
        if state.agent_listening:
            self._maybe_end_turn(state)

    def _on_user_state(self, state: _CallState, ev: UserStateChanged) -> None:
        if ev.new == "speaking":
            self._open_turn(state, "speech")
        elif state.turn_span is not None:
            state.turn_span.add_event("caller_speech_end")

    def _on_item(self, state: _CallState, ev: ConversationItemAdded) -> None:
        item = ev.item
        if isinstance(item, Message) and item.role == "user":
            if state.turn_span is None or state.replies_in_turn > 0:
                self._open_turn(state, "text")  # a typed turn: no speech started it
            if state.turn_span is not None:
                state.turn_span.add_event("user_item", {"duplex.item.id": item.id})

    def _on_metrics(self, state: _CallState, ev: MetricsCollected) -> None:
        m = ev.metrics
        now = time.time_ns()
        parent = state.turn_span or state.session_span
        attrs: dict[str, Any] = {
            "duplex.response.id": m.response_id,
            "duplex.reply.status": m.status,
            "duplex.reply.interrupted": m.interrupted,
            "duplex.reply.played_ms": m.played_ms,
            "duplex.tokens.input": m.input_tokens,
            "duplex.tokens.output": m.output_tokens,
        }
        for key, value in (
            ("duplex.turn.latency_ms", m.end_to_end_ms),
            ("duplex.reply.backend_ttfa_ms", m.backend_ttfa_ms),
            ("duplex.interruption.latency_ms", m.interruption_ms),
        ):
            if value is not None:
                attrs[key] = value
        span = self._tracer.start_span(
            "duplex.reply",
            context=self._trace.set_span_in_context(parent),
            start_time=state.reply_start_ns or now,
            attributes=attrs,
        )
        if m.status == "failed":
            span.set_status(self._Status(self._StatusCode.ERROR, "reply failed"))
        span.end(end_time=now)
        state.replies_in_turn += 1
        state.reply_start_ns = None
        labels = {"status": m.status, "interrupted": m.interrupted}
        self._m.replies.add(1, labels)
        if m.end_to_end_ms is not None:
            self._m.turn_latency.record(m.end_to_end_ms)
        if m.backend_ttfa_ms is not None:
            self._m.backend_ttfa.record(m.backend_ttfa_ms)
        self._m.tokens.add(m.input_tokens, {"direction": "input"})
        self._m.tokens.add(m.output_tokens, {"direction": "output"})
        self._maybe_end_turn(state)

    def _on_tool_called(self, state: _CallState, ev: ToolCalled) -> None:
        parent = state.turn_span or state.session_span
        state.tools[ev.call.call_id] = self._tracer.start_span(
            "duplex.tool",
            context=self._trace.set_span_in_context(parent),
            attributes={"duplex.tool.name": ev.call.name, "duplex.tool.call_id": ev.call.call_id},
        )

    def _on_tool_executed(self, state: _CallState, ev: ToolExecuted) -> None:
        span = state.tools.pop(ev.call.call_id, None)
        if span is None:  # called before we attached, or reported twice
            return
        span.set_attribute("duplex.tool.duration_ms", 1000.0 * ev.duration_s)
        span.set_attribute("duplex.tool.is_error", ev.output.is_error)
        if ev.output.is_error:
            span.set_status(self._Status(self._StatusCode.ERROR, ev.output.output[:200]))
        span.end()
        if state.reply_start_ns is None:
            state.reply_start_ns = time.time_ns()  # the follow-up reply starts from here
        attrs = {"tool": ev.call.name, "is_error": ev.output.is_error}
        self._m.tool_calls.add(1, attrs)
        self._m.tool_duration.record(1000.0 * ev.duration_s, attrs)

    def _on_interrupted(self, state: _CallState, ev: AgentInterrupted) -> None:
        (state.turn_span or state.session_span).add_event(
            "agent_interrupted", {"duplex.played_ms": ev.played_ms}
        )
        self._m.interruptions.add(1)
        self._m.interruption_latency.record(ev.latency_ms)

    def _on_error(self, state: _CallState, ev: SessionError) -> None:
        span = state.turn_span or state.session_span
        span.add_event(
            "session_error",
            {"duplex.error.code": ev.code, "duplex.error.recoverable": ev.recoverable},
        )
        self._m.errors.add(1, {"code": ev.code, "recoverable": ev.recoverable})
        if not ev.recoverable:
            state.session_span.set_status(self._Status(self._StatusCode.ERROR, ev.code))

    def _on_closed(self, state: _CallState, ev: SessionClosed) -> None:
        for span in state.tools.values():
            span.end()
        state.tools.clear()
        self._end_turn(state)
        if state.connect_span is not None:
            state.connect_span.end()
            state.connect_span = None
        state.session_span.set_attribute("duplex.session.close_reason", ev.reason)
        state.session_span.end()
        self._m.active.add(-1)


@dataclass
class TelemetrySetup:
    """What `setup_telemetry` installed, to hand to `SessionTelemetry` and to shut down."""

    tracer_provider: Any
    meter_provider: Any
    metrics_url: str | None = None

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


_installed: TelemetrySetup | None = None


def setup_telemetry(
    *,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
    serve_metrics: bool = True,
    service_name: str = "duplex-agent",
    environ: dict[str, str] | None = None,
) -> TelemetrySetup:
    """SDK providers for this process, installed as the global ones.

    Spans and metrics go to OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the traces/metrics
    variants) is set; metrics are also served for Prometheus at
    ``http://{metrics_host}:{metrics_port}/metrics`` when ``metrics_port`` is given
    (``serve_metrics=False`` only registers them, for a server that already serves
    prometheus_client's registry, such as livekit-agents' ``prometheus_port``).
    Once per process: a second call returns what the first installed.
    """
    global _installed
    if _installed is not None:
        return _installed
    env = os.environ if environ is None else environ
    trace, metrics, _ = _otel()
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ModuleNotFoundError as e:
        raise ConfigurationError(
            "telemetry needs the OpenTelemetry SDK: pip install 'duplex-agents[otel]'"
        ) from e
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", service_name)})
    tracer_provider = TracerProvider(resource=resource)
    readers: list[Any] = []
    otlp = any(
        env.get(k)
        for k in (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        )
    )
    if otlp:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    url = None
    if metrics_port is not None:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader

        readers.append(PrometheusMetricReader())
        if serve_metrics:
            from prometheus_client import start_http_server

            server, _thread = start_http_server(metrics_port, addr=metrics_host)
            url = f"http://{metrics_host}:{server.server_port}/metrics"
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    if url:
        log.info("metrics for Prometheus at %s", url)
    _installed = TelemetrySetup(tracer_provider, meter_provider, url)
    return _installed
