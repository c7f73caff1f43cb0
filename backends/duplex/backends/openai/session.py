"""`OpenAIRealtimeSession`: the `BackendSession` over one (re)connecting socket.

Public methods turn into client events; every one carries an ``event_id`` and the
ones with a server acknowledgement are futures settled by that ack or failed at
once by an ``error`` naming the event. A supervisor task reads the socket,
reconnects with backoff when it drops, rolls the connection over before the
service's session limit, and replays the session config and the whole
conversation on the new socket.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

import aiohttp
from duplex.agents import g711
from duplex.agents.audio import AudioFrame
from duplex.agents.backend import (
    BackendError,
    BackendEvent,
    BackendSession,
    Reconnected,
    ResponseDone,
    ToolChoice,
)
from duplex.agents.conversation import Conversation, Item, Message
from duplex.agents.errors import BackendErrorException, ResponseActiveError, SessionClosedError
from duplex.agents.resample import Resampler
from duplex.agents.tools import FunctionTool

from .connection import (
    MALFORMED,
    ConnectError,
    Connection,
    backoff_delays,
    new_event_id,
    open_connection,
)
from .dialect import dialect_for
from .dispatch import Dispatcher
from .metrics import ResponseMetrics
from .options import Endpoint, RealtimeOptions
from .responses import OpenAIResponseHandle
from .state import SessionState
from .sync import plan_sync

log = logging.getLogger("duplex.backends.openai")

#: Appends are at most this long, so audio reaches the server as it is spoken.
CHUNK_MS = 20
#: Caller audio kept while the socket is being rebuilt, sent once it is back.
HOLD_MS = 10_000


def _lost() -> BackendErrorException:
    return BackendErrorException(
        "the connection to the realtime server was lost; the request was not completed",
        code="connection_lost",
    )


class OpenAIRealtimeSession(BackendSession):
    def __init__(
        self,
        *,
        opts: RealtimeOptions,
        endpoint: Endpoint,
        instructions: str,
        tools: Sequence[FunctionTool],
    ) -> None:
        self._opts = opts
        self._endpoint = endpoint
        self._dialect = dialect_for(opts.dialect)
        self._instructions = instructions
        self._tools = list(tools)
        self._st = SessionState(opts, self._dialect, self._send_soon)
        self._dispatch = Dispatcher(self._st, wake_sender=self._st.changed)
        self._conn: Connection | None = None
        self._ready = asyncio.Event()
        self._closing = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sync_lock = asyncio.Lock()
        self._resampler: Resampler | None = None
        self._held: deque[dict[str, Any]] = deque()
        self._held_ms = 0.0
        self._rollover_due = False
        self._connected_at = time.monotonic()
        #: Completed reconnects (unplanned) and rollovers (planned), for tests and dashboards.
        self.reconnects = 0
        self.rollovers = 0

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
        self._conn = await self._dial_initial()
        self._spawn(self._supervise())
        try:
            await self._restore(conversation.items, attempt=None)
        except BaseException:
            await self.aclose()
            raise
        self._spawn(self._send_responses())
        if self._opts.max_session_duration is not None:
            self._spawn(self._rollover())

    async def aclose(self) -> None:
        if self._closing:
            return
        self._closing = True
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

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _check_open(self) -> None:
        if self._closing:
            raise SessionClosedError("the realtime session is closed")

    async def events(self) -> AsyncIterator[BackendEvent]:
        while True:
            ev = await self._st.next_event()
            if ev is None:
                return
            try:
                yield ev
            finally:
                self._st.delivered(ev)

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
            self._st.ops.fail(event_id, _lost())
        self._st.changed()
        return pending.future

    async def _settle(self, futures: Sequence[asyncio.Future[Any]]) -> None:
        """Wait for acks; the first server error is raised, the timeout only as a last resort."""
        if not futures:
            return
        done, pending = await asyncio.wait(futures, timeout=self._opts.request_timeout)
        first: BaseException | None = None
        for f in futures:
            if f in done and f.exception() is not None and first is None:
                first = f.exception()
        for f in pending:
            f.cancel()
        if first is not None:
            raise first
        if pending:
            raise BackendErrorException(
                f"the realtime server did not acknowledge {len(pending)} request(s) in "
                f"{self._opts.request_timeout:.0f} s",
                code="timeout",
            )

    # --- audio ----------------------------------------------------------------------------
    async def push_audio(self, frame: AudioFrame) -> None:
        self._check_open()
        rate = self._opts.input_rate
        mono = frame.to_mono()
        if mono.sample_rate != rate:
            if self._resampler is None or self._resampler.input_rate != mono.sample_rate:
                self._resampler = Resampler(mono.sample_rate, rate)
            out = self._resampler.push(mono)
            if out is None:
                return
            mono = out
        step = rate * CHUNK_MS // 1000
        fmt = self._opts.input_audio_format
        for start in range(0, mono.samples_per_channel, step):
            chunk = mono.slice(start, min(start + step, mono.samples_per_channel))
            if fmt == "pcm16":
                payload = chunk.to_pcm16()
            else:
                payload = g711.encode(chunk, "ulaw" if fmt == "g711_ulaw" else "alaw")
            event = {
                "type": "input_audio_buffer.append",
                "audio": base64.b64encode(payload).decode("ascii"),
            }
            self._st.buffer_ms += chunk.duration_ms
            self._st.input_ms += chunk.duration_ms
            conn = self._conn
            if self._ready.is_set() and conn is not None and not self._held:
                try:
                    await conn.send(event)
                    continue
                except (ConnectionError, RuntimeError, aiohttp.ClientError):
                    pass
            self._hold(event, chunk.duration_ms)

    def _hold(self, event: dict[str, Any], ms: float) -> None:
        self._held.append({**event, "_ms": ms})
        self._held_ms += ms
        while self._held_ms > HOLD_MS and self._held:
            self._held_ms -= self._held.popleft()["_ms"]

    async def _flush_held(self, conn: Connection) -> None:
        while self._held:
            event = self._held.popleft()
            self._held_ms -= event.pop("_ms")
            await conn.send(event)

    async def commit_audio(self) -> None:
        conn = await self._wait_ready()
        await self._flush_held(conn)
        if self._st.buffer_ms <= 0:
            raise BackendErrorException(
                "no caller audio to commit", code="input_audio_buffer_commit_empty"
            )
        fut = await self._request(conn, "commit", "", {"type": "input_audio_buffer.commit"})
        await self._settle([fut])

    async def clear_audio(self) -> None:
        self._held.clear()
        self._held_ms = 0.0
        self._st.buffer_ms = 0.0
        if self._resampler is not None:
            self._resampler.reset()
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
        protect = () if replay else st.undelivered
        plan = plan_sync(st.mirror, local, protect, self._dialect, self._opts)
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
        if st.responses.busy or st.responses.queued:
            policy = self._opts.response_policy
            if policy == "cancel_new":
                handle.fail(ResponseActiveError("a response is already active or requested"))
                return handle
            if policy == "cancel_existing":
                await self.cancel_response()
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
            sent = await self._send(
                {"type": "response.create", "event_id": handle.request_id, "response": payload}
            )
            if sent is None:
                st.responses.forget_sent(handle)
                handle.fail(_lost())
            st.changed()

    async def cancel_response(self) -> None:
        st = self._st
        for h in st.responses.sent:
            h.cancel_on_create = True
        for r in list(st.responses.active.values()):
            if r.stopping or r.id in st.responses.ended:
                continue
            r.cancel_sent = True
            await self._send({"type": "response.cancel", "response_id": r.id})

    # --- connection supervision -----------------------------------------------------------
    async def _dial_initial(self) -> Connection:
        last: ConnectError | None = None
        delays = [0.0, *backoff_delays(self._opts.reconnect)]
        for delay in delays:
            await asyncio.sleep(delay)
            try:
                return await open_connection(self._endpoint, timeout=self._opts.connect_timeout)
            except ConnectError as e:
                last = e
                if e.fatal:
                    break
        assert last is not None
        raise last

    async def _read(self, conn: Connection) -> None:
        try:
            async for rec in conn.receive():
                if rec.type == MALFORMED:
                    self._st.log_once(
                        "malformed-frame", "realtime: skipping a malformed frame: %r", rec.raw
                    )
                    continue
                self._dispatch.dispatch(rec.type, rec.event)
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as e:
            log.info("realtime: socket error: %s", type(e).__name__)

    async def _supervise(self) -> None:
        st = self._st
        while True:
            conn = self._conn
            assert conn is not None
            await self._read(conn)
            if self._closing:
                return
            planned, self._rollover_due = self._rollover_due, False
            self._ready.clear()
            self._conn = None
            with contextlib.suppress(Exception):
                await conn.close()
            if not planned:
                self._abort_inflight()
            st.changed()
            if st.fatal is not None:
                log.error("realtime: not reconnecting after fatal error %s", st.fatal[0])
                break
            new, attempt = await self._redial(planned)
            if new is None:
                break
            self._conn = new
            self._connected_at = time.monotonic()
            self._spawn(self._restore(self._st.mirror.items, attempt=0 if planned else attempt))
        self._closing = True
        self._st.changed()
        self._st.end()

    async def _redial(self, planned: bool) -> tuple[Connection | None, int]:
        last: ConnectError | None = None
        delays = [0.0] if planned else []
        delays += list(backoff_delays(self._opts.reconnect))
        for attempt, delay in enumerate(delays, 1):
            await asyncio.sleep(delay)
            if self._closing:
                return None, attempt
            try:
                return await open_connection(
                    self._endpoint, timeout=self._opts.connect_timeout
                ), attempt
            except ConnectError as e:
                last = e
                log.warning("realtime: reconnect attempt %d failed: %s", attempt, e.code)
                if e.fatal:
                    break
        code = last.code if last else "connection_lost"
        self._st.emit(
            BackendError(
                code, f"could not reconnect to the realtime server: {last}", recoverable=False
            )
        )
        return None, len(delays)

    async def _restore(self, items: Sequence[Item], *, attempt: int | None) -> None:
        """Configure a fresh socket and replay ``items`` on it; ``attempt`` None = first connect."""
        conn = self._conn
        assert conn is not None
        try:
            async with self._sync_lock:
                session = self._dialect.session(self._opts, self._instructions, self._tools)
                await self._session_update(conn, session)
                self._st.mirror.clear()
                await self._sync_items(conn, items, replay=True)
        except BackendErrorException as e:
            if attempt is None:
                raise
            if e.code != "connection_lost":
                self._st.emit(
                    BackendError(
                        e.code, f"replaying the conversation failed: {e}", recoverable=True
                    )
                )
                with contextlib.suppress(Exception):
                    await conn.close()
            return
        await self._flush_held(conn)
        self._ready.set()
        self._st.changed()
        if attempt == 0:
            self.rollovers += 1
        elif attempt is not None:
            self.reconnects += 1
        if attempt is not None:
            self._st.emit(Reconnected(attempt))

    def _abort_inflight(self) -> None:
        """An unplanned drop: fail what was waiting, close what was streaming."""
        st = self._st
        lost = _lost()
        st.ops.fail_all(lost)
        for h in (*st.responses.sent, *st.responses.queued):
            h.fail(lost)
        st.responses.sent.clear()
        st.responses.queued.clear()
        for rid, r in list(st.responses.active.items()):
            for item_id in r.items:
                stream = st.responses.streams.get(item_id)
                if stream is None:
                    continue
                if stream.kind == "function_call" and not stream.requested:
                    st.responses.streams.pop(item_id, None)
                    st.delete_item(item_id)  # never finished: no tool will run for it
                else:
                    self._dispatch.finish_message(stream)
            r.metrics.finish("failed", None, None, "connection_lost")
            if r.handle is not None:
                r.handle.fail(lost)
            st.responses.ended.append(rid)
            st.emit(ResponseDone(rid, "failed", None, None, "connection_lost"))
        st.responses.active.clear()
        for turn in list(st.user_turns.values()):
            if not turn.done:
                item = st.mirror.get(turn.item_id)
                if isinstance(item, Message):
                    st.update_item(_completed(item))
        st.user_turns.clear()
        st.user_speaking = False
        st.buffer_ms = 0.0

    async def _rollover(self) -> None:
        """Planned reconnect before the service's session limit, at a quiet moment."""
        limit = self._opts.max_session_duration
        assert limit is not None
        st = self._st
        while not self._closing:
            started = self._connected_at
            await asyncio.sleep(max(0.0, started + limit - time.monotonic()))
            if self._connected_at != started:
                continue  # reconnected meanwhile: a fresh session, a fresh limit
            await st.wait_until(lambda: self._closing or (st.quiet and self._ready.is_set()))
            if self._closing:
                return
            conn = self._conn
            if conn is None:
                continue
            log.info("realtime: rolling the session over after %.0f s", limit)
            self._rollover_due = True
            self._ready.clear()
            await conn.close()
            await st.wait_until(partial(self._moved_on, started))

    def _moved_on(self, since: float) -> bool:
        return self._closing or self._connected_at != since


def _completed(item: Message) -> Message:
    return replace(item, complete=True)
