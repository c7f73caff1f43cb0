"""A LiveKit server's agent-dispatch side: the worker WebSocket protocol, for tests.

It speaks what livekit-server speaks on ``/agent`` (protobuf ``WorkerMessage`` /
``ServerMessage`` over binary WebSocket frames, bearer token with the agent
grant) and records the first step of a job's room join on ``/rtc`` — the
furthest a job can get without a media server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from livekit import api
from livekit.protocol import agent, models

from .sim import API_KEY, API_SECRET


@dataclass
class RtcAttempt:
    path: str
    claims: api.access_token.Claims


@dataclass
class FakeLiveKitServer:
    url: str = ""
    worker_claims: list[api.access_token.Claims] = field(default_factory=list)
    received: list[agent.WorkerMessage] = field(default_factory=list)
    rtc_attempts: list[RtcAttempt] = field(default_factory=list)
    _ws: web.WebSocketResponse | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/agent", self._agent)
        app.router.add_get("/rtc/{tail:.*}", self._rtc)
        app.router.add_get("/rtc", self._rtc)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"ws://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # protocol ------------------------------------------------------------------------------
    async def _agent(self, request: web.Request) -> web.StreamResponse:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        try:
            claims = api.TokenVerifier(API_KEY, API_SECRET).verify(token)
        except Exception:
            return web.Response(status=401, text="invalid token")
        if claims.video is None or not claims.video.agent:
            return web.Response(status=403, text="agent grant required")
        self.worker_claims.append(claims)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._ws = ws
        async for msg in ws:
            if msg.type != WSMsgType.BINARY:
                continue
            m = agent.WorkerMessage.FromString(msg.data)
            if m.HasField("register"):
                await ws.send_bytes(
                    agent.ServerMessage(
                        register=agent.RegisterWorkerResponse(
                            worker_id="AW_test",
                            server_info=models.ServerInfo(version="1.9.0", protocol=16),
                        )
                    ).SerializeToString()
                )
            async with self._changed:
                self.received.append(m)
                self._changed.notify_all()
        return ws

    async def _rtc(self, request: web.Request) -> web.StreamResponse:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        token = token or request.query.get("access_token", "")
        claims = api.TokenVerifier(API_KEY, API_SECRET).verify(token)
        async with self._changed:
            self.rtc_attempts.append(RtcAttempt(request.path, claims))
            self._changed.notify_all()
        # no media server here: refuse, as a server would for an unknown room
        return web.Response(status=404, text="room not found")

    # driving -------------------------------------------------------------------------------
    async def send(self, message: agent.ServerMessage) -> None:
        assert self._ws is not None, "no worker connected"
        await self._ws.send_bytes(message.SerializeToString())

    async def wait_for(self, pred: Callable[[], Any], timeout: float = 10.0) -> Any:
        async def wait() -> Any:
            async with self._changed:
                while not (result := pred()):
                    await self._changed.wait()
                return result

        return await asyncio.wait_for(wait(), timeout)

    def messages(self, kind: str) -> list[Any]:
        return [getattr(m, kind) for m in self.received if m.HasField(kind)]

    def join_token(self, room: str, identity: str, name: str = "") -> str:
        return (
            api.AccessToken(API_KEY, API_SECRET)
            .with_identity(identity)
            .with_name(name)
            .with_kind("agent")
            .with_grants(api.VideoGrants(room_join=True, room=room, agent=True))
            .to_jwt()
        )
