"""`agent run`: the worker registers, is offered a room, accepts, runs the job, drains.

The LiveKit side is `FakeLiveKitServer`, speaking the worker protocol over a real
WebSocket; jobs run in threads so the test sees them in-process.
"""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest
from livekit.protocol import agent, models

from duplex.agents.errors import ConfigurationError
from duplex.plugins.livekit import LiveKitCredentials
from duplex.plugins.livekit.worker import WorkerConfig, build_server

from .fake_server import FakeLiveKitServer
from .sim import API_KEY, API_SECRET

APP = """
from duplex.agents import Agent


class Receptionist(Agent):
    instructions = "Answer the phone."
"""


@pytest.fixture
async def lk_server():
    server = FakeLiveKitServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def app_file(tmp_path: Path) -> str:
    path = tmp_path / "reception_app.py"
    path.write_text(textwrap.dedent(APP))
    return str(path)


@pytest.mark.parametrize("executor", ["thread", "process"])
async def test_worker_is_dispatched_a_room_and_runs_the_job(
    lk_server: FakeLiveKitServer, app_file: str, executor: str
) -> None:
    """``process`` is production: the job and its prewarm are pickled to a job process."""
    config = WorkerConfig(app=app_file, backend="scripted", agent_name="reception", max_jobs=2)
    server = build_server(
        config,
        credentials=LiveKitCredentials(lk_server.url, API_KEY, API_SECRET),
        executor=executor,
        num_idle_processes=1 if executor == "process" else 0,
        host="127.0.0.1",
        port=0,
    )
    running = asyncio.ensure_future(server.run(devmode=executor == "thread"))
    try:
        [register] = await lk_server.wait_for(lambda: lk_server.messages("register"))
        assert register.agent_name == "reception"  # explicit dispatch under this name
        assert register.type == agent.JobType.JT_ROOM
        assert lk_server.worker_claims[0].video.agent

        job = agent.Job(
            id="AJ_1",
            type=agent.JobType.JT_ROOM,
            room=models.Room(sid="RM_1", name="call-1"),
            participant=models.ParticipantInfo(identity="sip_+15551234567"),
            agent_name="reception",
        )
        await lk_server.send(agent.ServerMessage(availability=agent.AvailabilityRequest(job=job)))
        [answer] = await lk_server.wait_for(lambda: lk_server.messages("availability"), 30)
        assert answer.job_id == "AJ_1" and answer.available
        assert answer.participant_identity == "agent-AJ_1"
        assert answer.participant_attributes["duplex.app"] == app_file
        assert answer.participant_attributes["lk.agent.name"] == "reception"

        token = lk_server.join_token("call-1", answer.participant_identity)
        await lk_server.send(
            agent.ServerMessage(
                assignment=agent.JobAssignment(job=job, url=lk_server.url, token=token)
            )
        )
        # the job joins the assigned room with the assigned token (our server has no
        # media side, so the join fails there and the job ends)
        attempt = (await lk_server.wait_for(lambda: lk_server.rtc_attempts, 30))[0]
        assert attempt.path.startswith("/rtc")
        assert attempt.claims.identity == "agent-AJ_1"
        assert attempt.claims.video.room == "call-1"
        statuses = await lk_server.wait_for(
            lambda: [
                u.status
                for u in lk_server.messages("update_job")
                if u.status != agent.JobStatus.JS_RUNNING
            ]
        )
        assert statuses[0] in (agent.JobStatus.JS_SUCCESS, agent.JobStatus.JS_FAILED)

        # load is reported (jobs / max_jobs here), then draining makes the worker full
        await lk_server.wait_for(lambda: lk_server.messages("update_worker"), timeout=6)
        await server.drain(timeout=5)
        full = await lk_server.wait_for(
            lambda: [
                u
                for u in lk_server.messages("update_worker")
                if u.status == agent.WorkerStatus.WS_FULL
            ]
        )
        assert full
        assert server.draining
    finally:
        await server.aclose()
        await asyncio.wait_for(running, 10)


def test_worker_needs_api_keys(app_file: str) -> None:
    with pytest.raises(ConfigurationError, match="LIVEKIT_API_KEY"):
        build_server(WorkerConfig(app=app_file), credentials=LiveKitCredentials("ws://x"))


def test_load_is_jobs_over_capacity() -> None:
    from duplex.plugins.livekit.worker import job_load

    class FakeServer:
        def __init__(self) -> None:
            self.active_jobs = [object(), object(), object()]

    assert job_load(WorkerConfig(app="x", max_jobs=4), FakeServer()) == 0.75  # type: ignore[arg-type]
    assert job_load(WorkerConfig(app="x", max_jobs=2), FakeServer()) == 1.0  # type: ignore[arg-type]


async def test_agent_run_command_registers_and_drains_on_sigterm(
    lk_server: FakeLiveKitServer, app_file: str
) -> None:
    import os
    import signal
    import sys

    agent_cli = os.path.join(os.path.dirname(sys.executable), "agent")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    proc = await asyncio.create_subprocess_exec(
        agent_cli, "run", app_file, "--backend", "scripted", "--url", lk_server.url,
        "--api-key", API_KEY, "--api-secret", API_SECRET, "--dev", "--port", "0",
        "--agent-name", "cli-worker",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        [register] = await lk_server.wait_for(lambda: lk_server.messages("register"), 30)
        assert register.agent_name == "cli-worker"
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, out.decode()
        assert any(
            u.status == agent.WorkerStatus.WS_FULL for u in lk_server.messages("update_worker")
        )  # it told the server to send no more jobs before leaving
        assert API_SECRET not in out.decode()  # the secret never reaches the logs
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_agent_run_serves_prometheus_metrics(
    lk_server: FakeLiveKitServer, app_file: str
) -> None:
    """``agent run --metrics-port``: livekit-agents' endpoint serves duplex's metrics too."""
    pytest.importorskip("opentelemetry.exporter.prometheus")
    import os
    import signal
    import socket
    import sys
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    agent_cli = os.path.join(os.path.dirname(sys.executable), "agent")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    proc = await asyncio.create_subprocess_exec(
        agent_cli, "run", app_file, "--backend", "scripted", "--url", lk_server.url,
        "--api-key", API_KEY, "--api-secret", API_SECRET, "--dev", "--port", "0",
        "--metrics-port", str(port),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        await lk_server.wait_for(lambda: lk_server.messages("register"), 30)

        def scrape() -> str:
            url = f"http://127.0.0.1:{port}/metrics"
            return str(urllib.request.urlopen(url, timeout=10).read().decode())

        body = await asyncio.to_thread(scrape)
        assert "duplex_sessions_active" in body
        assert "lk_agents" in body  # livekit-agents' own metrics, same endpoint
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
