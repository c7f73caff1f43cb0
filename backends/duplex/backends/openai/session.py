"""`OpenAIRealtimeSession`: the `BackendSession` over one (re)connecting socket.

Public methods turn into client events; every one carries an ``event_id`` and the
ones with a server acknowledgement are futures settled by that ack or failed at
once by an ``error`` naming the event. A supervisor task reads the socket,
reconnects with backoff when it drops, rolls the connection over before the
service's session limit, and replays the session config and the whole
conversation on the new socket. Liveness: aiohttp's heartbeat pings the server and
a per-reply watchdog fails a reply that stalls (and rebuilds the connection, the
only way to be sure the server holds no half-finished response). Every long-lived
task is supervised: an unexpected exception becomes a fatal `BackendError` and a
closed session, never a session that looks alive and does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any

import aiohttp

from duplex.agents.audio import AudioFrame
from duplex.agents.backend import (
    BackendError,
    BackendEvent,
    BackendSession,
    ToolChoice,
)
from duplex.agents.conversation import Conversation, Item, Message
from duplex.agents.errors import BackendErrorException, ConfigurationError, SessionClosedError
from duplex.agents.tools import FunctionTool

from .connection import Connection, dial, new_event_id
from .dialect import dialect_for
from .dispatch import Dispatcher
from .live_options import changed_options
from .metrics import ResponseMetrics
from .mirror import settle
from .options import Endpoint, RealtimeOptions
from .responses import OpenAIResponseHandle
from .state import SessionState
from .supervision import ConnectionSupervision, lost
from .sync import plan_sync
from .uplink import AudioUplink

log = logging.getLogger("duplex.backends.openai")


class OpenAIRealtimeSession(ConnectionSupervision, BackendSession):
    def __init__(
        self,
        *,
        opts: RealtimeOptions,
        endpoint: Endpoint,
        instructions: str,
        tools: Sequence[FunctionTool],
        http: aiohttp.ClientSession | None = None,
    ) -> None:
        self._opts = opts
        self._http = http
        self._endpoint = endpoint
        self._dialect = dialect_for(opts.dialect)
        self._instructions = instructions
        self._tools = list(tools)
        self._st = SessionState(opts, self._dialect, self._send_soon)
        self._dispatch = Dispatcher(self._st, wake_sender=self._st.changed)
        self._conn: Connection | None = None
        self._ready = asyncio.Event()
        #: No more requests (aclose, fatal error, reconnection given up); _closed: aclose ran.
        self._closing = False
        self._closed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sync_lock = asyncio.Lock()
        self._uplink = AudioUplink(opts, self._st)
        self._rollover_due = False
        self._connected_at = time.monotonic()
        #: Completed reconnects (unplanned) and rollovers (planned), for tests and dashboards.
        self.reconnects = 0
        self.rollovers = 0
        #: Set while a planned reconnect waits for a quiet moment (no reply, no turn in flight).
        self.rollover_pending = asyncio.Event()
        self._roll_now = asyncio.Event()
        #: Replies and requests the watchdog already gave up on.
        self._timed_out: set[str] = set()

    # --- introspection --------------------------------------------------------------------
    @property
    def response_metrics(self) -> list[ResponseMetrics]:
        """Metrics of recent responses, oldest first (server-initiated ones included)."""
        return list(self._st.metrics)

    @property
    def remote_items(self) -> tuple[Item, ...]:
        """The mirror: the items the server holds, as the same objects the session holds."""
        return self._st.mirror.items

    @property
    def server_session(self) -> dict[str, Any]:
        return dict(self._dispatch.session_info)

    # --- lifecycle ------------------------------------------------------------------------
    async def start(self, conversation: Conversation) -> None:
        # One bounded attempt: a wrong URL or key fails now, not after the whole backoff.
        self._conn, _ = await dial(
            self._endpoint,
            self._opts.reconnect,
            timeout=min(self._opts.connect_timeout, self._opts.first_connect_timeout),
            immediate=True,
            first=True,
            http=self._http,
            heartbeat=self._opts.heartbeat_s,
        )
        self._spawn(self._supervise(), critical=True)
        try:
            await self._restore(conversation.items, attempt=None)
        except BaseException:
            await self.aclose()
            raise
        self._spawn(self._send_responses(), critical=True)
        self._spawn(self._watchdog(), critical=True)
        self._spawn(self._rollover(), critical=True)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = self._closing = True
        self._ready.clear()
        closed = SessionClosedError("the realtime session is closed")
        self._st.ops.fail_all(closed)
        for h in (*self._st.responses.queued, *self._st.responses.sent):
            h.fail(closed)
        for r in self._st.responses.active.values():
            if r.handle is not None:
                r.handle.fail(closed)
        self._st.changed()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._st.end()

    def _spawn(
        self, coro: Coroutine[Any, Any, Any], *, critical: bool = False
    ) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if critical:
            task.add_done_callback(self._supervised)
        return task

    def _supervised(self, task: asyncio.Task[Any]) -> None:
        """A task the session cannot live without ended by an exception: say so and close."""
        if task.cancelled() or task.exception() is None or self._closing:
            return
        exc = task.exception()
        name = task.get_coro().__qualname__ if task.get_coro() else "task"  # type: ignore[union-attr]
        log.error("realtime: %s failed: %s", name, type(exc).__name__)
        self._st.emit(
            BackendError(
                "internal_error",
                f"realtime backend task {name} failed ({type(exc).__name__}); session closed",
                recoverable=False,
            )
        )
        self._closing = True
        self._ready.clear()
        self._st.changed()
        self._st.end()

    def _check_open(self) -> None:
        if self._closing:
            raise SessionClosedError("the realtime session is closed")

    async def events(self) -> AsyncIterator[BackendEvent]:
        """Backend events in order. An item event counts as seen once handed out: the
        consumer applies it to its conversation before it awaits anything else."""
        while True:
            ev = await self._st.next_event()
            if ev is None:
                return
            self._st.delivered(ev)
            yield ev

    def deliver_nowait(self, handler: Callable[[BackendEvent], bool] | None) -> None:
        self._st.direct = handler

    # --- sending --------------------------------------------------------------------------
    def _send_soon(self, event: dict[str, Any]) -> None:
        """Fire-and-forget send from a synchronous handler (e.g. a cancel on creation)."""
        self._spawn(self._send(event))

    async def _send(self, event: dict[str, Any]) -> str | None:
        """Send on the live socket; None when there is none (the caller's request is moot)."""
        conn = self._conn
        if conn is None or not self._ready.is_set():
            return None
        try:
            return await conn.send(event)
        except (ConnectionError, RuntimeError, aiohttp.ClientError):
            return None

    async def _wait_ready(self) -> Connection:
        self._check_open()
        if not self._ready.is_set():
            try:
                await asyncio.wait_for(self._ready.wait(), self._opts.request_timeout)
            except asyncio.TimeoutError:
                raise BackendErrorException(
                    "the realtime connection is not back yet", code="connection_lost"
                ) from None
        self._check_open()
        assert self._conn is not None
        return self._conn

    async def _request(
        self, conn: Connection, kind: str, key: str, event: dict[str, Any], payload: Any = None
    ) -> asyncio.Future[Any]:
        """Send an acknowledged request; the returned future is its ack (or its error)."""
        event_id = new_event_id()
        pending = self._st.ops.add(kind, key, event_id, payload)
        try:
            await conn.send({"event_id": event_id, **event})
        except (ConnectionError, RuntimeError, aiohttp.ClientError):
            self._st.ops.fail(event_id, lost())
        self._st.changed()
        return pending.future

    async def _settle(self, futures: Sequence[asyncio.Future[Any]]) -> None:
        await settle(futures, self._st.ops, self._opts.request_timeout)

    # --- audio ----------------------------------------------------------------------------
    async def push_audio(self, frame: AudioFrame) -> None:
        self._check_open()
        self._uplink.feed(frame, self._conn if self._ready.is_set() else None)

    def push_audio_nowait(self, frame: AudioFrame) -> bool:
        if self._closing:
            return False  # push_audio raises the session's error
        self._uplink.feed(frame, self._conn if self._ready.is_set() else None)
        return True

    async def commit_audio(self) -> None:
        conn = await self._wait_ready()
        await self._uplink.flush(conn)
        if self._st.buffer_ms <= 0:
            raise BackendErrorException(
                "no caller audio to commit", code="input_audio_buffer_commit_empty"
            )
        fut = await self._request(conn, "commit", "", {"type": "input_audio_buffer.commit"})
        await self._settle([fut])

    async def clear_audio(self) -> None:
        self._uplink.clear()
        conn = await self._wait_ready()
        await conn.send({"type": "input_audio_buffer.clear"})

    # --- session config -------------------------------------------------------------------
    async def _session_update(self, conn: Connection, session: dict[str, Any]) -> None:
        fut = await self._request(
            conn, "session", "", {"type": "session.update", "session": session}
        )
        await self._settle([fut])

    async def update_instructions(self, text: str) -> None:
        self._instructions = text
        conn = await self._wait_ready()
        await self._session_update(conn, self._dialect.instructions_update(text))

    async def update_tools(self, tools: Sequence[FunctionTool]) -> None:
        self._tools = list(tools)
        conn = await self._wait_ready()
        await self._session_update(
            conn, self._dialect.tools_update(self._tools, self._opts.tool_choice)
        )

    async def update_agent(
        self, *, instructions: str, tools: Sequence[FunctionTool], **options: Any
    ) -> None:
        """A handoff in one ``session.update``; a voice the service would refuse is kept."""
        items = self._st.mirror.items
        try:
            opts = changed_options(self._opts, items, **options)
        except ConfigurationError as e:
            if "voice" not in options:
                raise
            log.warning("handoff keeps the current voice: %s", e)
            rest = {k: v for k, v in options.items() if k != "voice"}
            opts = changed_options(self._opts, items, **rest)
        opts = opts or self._opts
        self._instructions = instructions
        self._tools = list(tools)
        conn = await self._wait_ready()
        await self._session_update(conn, self._dialect.session(opts, instructions, self._tools))
        self._opts = self._st.opts = opts

    async def update_options(self, **changes: Any) -> None:
        """One ``session.update`` with the changed options (kept for reconnects too)."""
        opts = changed_options(self._opts, self._st.mirror.items, **changes)
        if opts is None:
            return
        conn = await self._wait_ready()
        session = self._dialect.session(opts, self._instructions, self._tools)
        await self._session_update(conn, session)
        self._opts = self._st.opts = opts

    # --- conversation ---------------------------------------------------------------------
    async def sync(self, conversation: Conversation) -> None:
        """Make the server's conversation equal ``conversation``.

        A drop in the middle does not lose anything: after the reconnect the mirror
        is replayed and the remaining difference is sent again.
        """
        for attempt in range(3):
            await self._wait_ready()
            try:
                async with self._sync_lock:
                    conn = await self._wait_ready()
                    await self._sync_items(conn, conversation.items)
                return
            except BackendErrorException as e:
                if e.code != "connection_lost" or attempt == 2:
                    raise

    async def _sync_items(
        self, conn: Connection, local: Sequence[Item], *, replay: bool = False
    ) -> None:
        st = self._st
        # A replay re-creates everything the mirror held, delivered or not.
        if replay:
            plan = plan_sync(st.mirror, local, (), (), self._dialect, self._opts)
        else:
            plan = plan_sync(st.mirror, local, st.undelivered, st.unseen, self._dialect, self._opts)
        futures: list[asyncio.Future[Any]] = []
        for item_id in plan.local_deletes:
            st.mirror.remove(item_id)
        for item_id in plan.deletes:
            event: dict[str, Any] = {"type": "conversation.item.delete", "item_id": item_id}
            futures.append(await self._request(conn, "delete", item_id, event, payload=False))
        for item, wire, remote_prev, local_prev in plan.creates:
            event = {
                "type": "conversation.item.create",
                "previous_item_id": remote_prev or "root",
                "item": wire,
            }
            futures.append(
                await self._request(conn, "create", item.id, event, payload=(item, local_prev))
            )
        await self._settle(futures)
        # Local-only items go in once their neighbours are in place.
        for item, after in plan.local_creates:
            st.mirror.insert(item, after, remote=False, first=after is None)

    async def truncate(self, item_id: str, audio_end_ms: int) -> None:
        st = self._st
        item = st.mirror.get(item_id)
        if not (isinstance(item, Message) and item.role == "assistant"):
            raise BackendErrorException(
                f"item {item_id!r} is not an assistant message of this conversation",
                code="item_truncate_invalid_item_id",
            )
        stream = st.responses.streams.get(item_id)
        have_ms = stream.audio_ms if stream is not None else item.audio_ms
        end = int(min(max(0.0, float(audio_end_ms)), have_ms))
        conn = await self._wait_ready()
        if end <= 0:
            # Nothing was heard: a truncate to 0 ms is refused by the service, so the
            # item goes entirely, and the session is told with ItemDeleted.
            if st.mirror.is_remote(item_id):
                delete = {"type": "conversation.item.delete", "item_id": item_id}
                fut = await self._request(conn, "delete", item_id, delete, payload=True)
                await self._settle([fut])
            else:
                st.delete_item(item_id)
            return
        if item.truncated_ms is not None and item.truncated_ms <= end:
            return
        event: dict[str, Any] = {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": end,
        }
        fut = await self._request(conn, "truncate", item_id, event)
        await self._settle([fut])

    # --- responses ------------------------------------------------------------------------
    async def create_response(
        self, *, instructions: str | None = None, tool_choice: ToolChoice | None = None
    ) -> OpenAIResponseHandle:
        self._check_open()
        st = self._st
        handle = OpenAIResponseHandle(instructions=instructions, tool_choice=tool_choice)
        # One at a time: the session's reply policy decides what a second request means;
        # here it only waits for the active response (a server-VAD one included) to end.
        st.responses.queued.append(handle)
        st.changed()
        return handle

    async def _send_responses(self) -> None:
        """Sends queued requests one at a time, each once no response is active."""
        st = self._st

        def can_send() -> bool:
            return self._closing or bool(
                st.responses.queued and not st.responses.busy and self._ready.is_set()
            )

        while True:
            await st.wait_until(can_send)
            if self._closing:
                return
            handle = st.responses.queued.popleft()
            instructions = None
            if handle.instructions:
                # OpenAI replaces the session instructions for this response; keep both.
                instructions = f"{self._instructions}\n\n{handle.instructions}".strip()
            payload = self._dialect.response(
                self._opts,
                instructions=instructions,
                tool_choice=handle.tool_choice,
                request_id=handle.request_id,
            )
            st.responses.sent.append(handle)
            handle.sent_at = time.monotonic()
            sent = await self._send(
                {"type": "response.create", "event_id": handle.request_id, "response": payload}
            )
            if sent is None:
                st.responses.forget_sent(handle)
                handle.fail(lost())
            st.changed()

    async def cancel_response(self) -> None:
        st = self._st
        for h in (*st.responses.sent, *st.responses.queued):
            h.cancel_on_create = True  # cut as soon as it starts; its handle still resolves
        for r in list(st.responses.active.values()):
            if r.stopping or r.id in st.responses.ended:
                continue
            r.cancel_sent = True
            await self._send({"type": "response.cancel", "response_id": r.id})
