"""OpenTelemetry: the span tree of a scripted call with a tool; metrics; the Prometheus endpoint."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from duplex.agents import AgentSession, MetricsCollected, ToolExecuted
from duplex.agents.telemetry import SessionTelemetry
from duplex.agents.testing import MemoryTransport, Reply, ScriptedBackend, ScriptedCall
from tests.test_cli_fixes import _lines, _wait_line
from tests.test_logs import Lookup

ROOT = Path(__file__).resolve().parent.parent


def _metrics(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                out[metric.name] = list(metric.data.data_points)
    return out


async def test_span_tree_of_a_call_with_a_tool() -> None:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    telemetry = SessionTelemetry(
        tracer_provider=tracer_provider, meter_provider=MeterProvider(metric_readers=[reader])
    )
    backend = ScriptedBackend(
        [
            Reply(
                text="let me look", audio_ms=200, calls=(ScriptedCall("lookup", {"code": "A1"}),)
            ),
            Reply(text="A1 is fine", audio_ms=300),
        ]
    )
    session = AgentSession(agent=Lookup(), backend=backend)
    telemetry.attach(session)
    await session.start(MemoryTransport())
    assert _metrics(reader)["duplex.sessions.active"][0].value == 1
    tool = session.next_event(ToolExecuted)
    done: list[MetricsCollected] = []
    both = asyncio.Event()
    session.on(MetricsCollected, lambda e: (done.append(e), len(done) == 2 and both.set()))
    await session.send_text("check A1")
    await tool
    await asyncio.wait_for(both.wait(), 10)  # the reply that called the tool, then the follow-up
    await session.aclose()

    spans = exporter.get_finished_spans()
    by_name: dict[str, list[Any]] = {}
    for s in spans:
        by_name.setdefault(s.name, []).append(s)
    (root,) = by_name["duplex.session"]
    assert root.parent is None and root.attributes["duplex.session.id"] == session.id
    (connect,) = by_name["duplex.backend.connect"]
    (turn,) = by_name["duplex.turn"]
    assert connect.parent.span_id == root.context.span_id
    assert turn.parent.span_id == root.context.span_id
    assert turn.attributes["duplex.turn.source"] == "text"
    assert len(by_name["duplex.reply"]) == 2
    (tool_span,) = by_name["duplex.tool"]
    for child in [*by_name["duplex.reply"], tool_span]:
        assert child.parent.span_id == turn.context.span_id
        assert turn.start_time <= child.start_time <= child.end_time <= turn.end_time
    assert tool_span.attributes["duplex.tool.name"] == "lookup"
    assert tool_span.attributes["duplex.tool.is_error"] is False
    first, follow_up = sorted(by_name["duplex.reply"], key=lambda s: s.start_time)
    assert first.end_time <= tool_span.end_time <= follow_up.start_time + 1  # tool, then reply
    assert {s.attributes["duplex.reply.status"] for s in by_name["duplex.reply"]} == {"completed"}
    assert root.attributes["duplex.session.close_reason"] == "closed"
    assert all(s.end_time <= root.end_time for s in spans)

    m = _metrics(reader)
    assert sum(p.value for p in m["duplex.replies"]) == 2
    assert [p.attributes["tool"] for p in m["duplex.tool.calls"]] == ["lookup"]
    assert m["duplex.sessions.active"][0].value == 0


APP = """
from duplex.agents import Agent


class Simple(Agent):
    instructions = "Be brief."
"""


def test_prometheus_endpoint_serves_session_metrics(tmp_path: Path) -> None:
    """``agent dev --metrics-port``: a scrape lists duplex's metrics (after one call)."""
    app = tmp_path / "metrics_app.py"
    app.write_text(APP)
    agent = Path(sys.executable).with_name("agent")
    proc = subprocess.Popen(
        [str(agent), "dev", str(app), "--backend=scripted", "--port=0", "--metrics-port=0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        q = _lines(proc)
        line = _wait_line(q, "metrics: http://127.0.0.1:")
        url = line.split("metrics: ", 1)[1].strip()
        body = urllib.request.urlopen(url, timeout=10).read().decode()
        active = [ln for ln in body.splitlines() if ln.startswith("duplex_sessions_active")]
        assert active and float(active[0].rsplit(" ", 1)[1]) == 0.0, body[-2000:]
        assert "# TYPE duplex_sessions_active" in body
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


OTLP_SCRIPT = """
import asyncio
from duplex.agents import AgentSession
from duplex.agents.telemetry import SessionTelemetry, setup_telemetry
from duplex.agents.testing import MemoryTransport, Reply, ScriptedBackend
from tests.test_logs import Lookup


async def main():
    setup = setup_telemetry()
    telemetry = SessionTelemetry()
    session = AgentSession(agent=Lookup(), backend=ScriptedBackend([Reply("hi", audio_ms=100)]))
    telemetry.attach(session)
    await session.start(MemoryTransport())
    await session.send_text("hello")
    await session.wait_for(__import__("duplex.agents").agents.MetricsCollected)
    await session.aclose()
    setup.shutdown()  # flushes spans and metrics


asyncio.run(main())
"""


async def test_spans_and_metrics_reach_an_otlp_collector(tmp_path: Path) -> None:
    """OTLP/HTTP to a collector on loopback (``OTEL_EXPORTER_OTLP_ENDPOINT``)."""
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    from aiohttp import web
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    spans: list[str] = []
    metric_names: list[str] = []

    async def traces(request: web.Request) -> web.Response:
        req = ExportTraceServiceRequest.FromString(await request.read())
        spans.extend(s.name for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans)
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def metrics(request: web.Request) -> web.Response:
        req = ExportMetricsServiceRequest.FromString(await request.read())
        metric_names.extend(
            m.name for rm in req.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
        )
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    app.router.add_post("/v1/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", OTLP_SCRIPT,
            cwd=ROOT,
            env={**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, out.decode()
    finally:
        await runner.cleanup()
    assert {"duplex.session", "duplex.backend.connect", "duplex.turn", "duplex.reply"} <= set(
        spans
    ), spans
    assert {"duplex.replies", "duplex.sessions.active"} <= set(metric_names), metric_names
