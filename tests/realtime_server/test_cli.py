"""``agent realtime-server`` as a process: it binds loopback, prints its URL, checks keys."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys

import aiohttp


async def test_agent_realtime_server_process() -> None:
    env = {**os.environ, "DUPLEX_REALTIME_API_KEYS": "sk-env-key"}
    env.pop("DUPLEX_VLLM_URL", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "duplex.agents.cli", "realtime-server", "--port", "0",
        "--api-key", "sk-flag-key", "--model", "my-model",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = ""
        while not url:
            line = (await asyncio.wait_for(proc.stdout.readline(), 120)).decode()
            assert line, "the server exited"
            m = re.search(r"ws://127\.0\.0\.1:\d+/v1/realtime", line)
            url = m.group(0) if m else ""
        async with aiohttp.ClientSession() as http:
            for key in ("sk-flag-key", "sk-env-key"):
                headers = {"Authorization": f"Bearer {key}"}
                ws = await http.ws_connect(url + "?model=x", headers=headers)
                created = json.loads((await ws.receive(timeout=30)).data)
                assert created["type"] == "session.created"
                assert created["session"]["model"] == "x"
                await ws.close()
            bad = {"Authorization": "Bearer sk-nope"}
            async with http.get(url.replace("ws://", "http://"), headers=bad) as resp:
                assert resp.status == 401
                assert (await resp.json())["error"]["code"] == "invalid_api_key"
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), 30)
