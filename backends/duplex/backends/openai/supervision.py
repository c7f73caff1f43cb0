"""Keeping one OpenAI Realtime session on a live socket: dial, read, reconnect and replay,
the reply watchdog, and planned rollovers in a quiet window.

A mixin of `OpenAIRealtimeSession`: the state it works on (options, the session state,
the dispatcher, the connection) is the session's own, declared below for the type checker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import aiohttp

from duplex.agents.backend import BackendError, Reconnected, Reconnecting
from duplex.agents.errors import BackendErrorException

from .connection import MALFORMED, ConnectError, Connection, dial
from .responses import OpenAIResponseHandle

if TYPE_CHECKING:
    from duplex.agents.conversation import Item
    from duplex.agents.tools import FunctionTool

    from .dialect import Dialect
    from .dispatch import Dispatcher
    from .options import Endpoint, RealtimeOptions
    from .state import SessionState
    from .uplink import AudioUplink

log = logging.getLogger("duplex.backends.openai")


def lost() -> BackendErrorException:
    return BackendErrorException(
        "the connection to the realtime server was lost; the request was not completed",
        code="connection_lost",
    )


class ConnectionSupervision:
    _opts: RealtimeOptions
    _http: aiohttp.ClientSession | None
    _endpoint: Endpoint
    _dialect: Dialect
    _instructions: str
    _tools: list[FunctionTool]
    _st: SessionState
    _dispatch: Dispatcher
    _conn: Connection | None
    _ready: asyncio.Event
    _closing: bool
    _sync_lock: asyncio.Lock
    _uplink: AudioUplink
    _rollover_due: bool
    _connected_at: float
    reconnects: int
    rollovers: int
    rollover_pending: asyncio.Event
    _roll_now: asyncio.Event
    _timed_out: set[str]

    if TYPE_CHECKING:

        def _spawn(
            self, coro: Coroutine[Any, Any, Any], *, critical: bool = False
        ) -> asyncio.Task[Any]: ...
        async def _session_update(self, conn: Connection, session: dict[str, Any]) -> None: ...
        async def _sync_items(
            self, conn: Connection, local: Sequence[Item], *, replay: bool = False
        ) -> None: ...

    # --- connection supervision -----------------------------------------------------------
    async def _dial(self, *, immediate: bool) -> tuple[Connection, int]:
        return await dial(
            self._endpoint,
            self._opts.reconnect,
            timeout=self._opts.connect_timeout,
            immediate=immediate,
            stop=lambda: self._closing,
            http=self._http,
            heartbeat=self._opts.heartbeat_s,
        )

    async def _read(self, conn: Connection) -> str:
        """Dispatch until the socket ends; returns why it ended."""
        try:
            async for rec in conn.receive():
                if rec.type == MALFORMED:
                    self._st.log_once(
                        "malformed-frame", "realtime: skipping a malformed frame: %.200r", rec.raw
                    )
                    self._dispatch.malformed("a frame that is not a JSON event object")
                    continue
                self._dispatch.dispatch(rec.type, rec.event)
        except (aiohttp.ClientError, ConnectionError, RuntimeError, asyncio.TimeoutError) as e:
            log.info("realtime: socket error: %s", type(e).__name__)
            return f"socket error: {type(e).__name__}"
        return f"socket closed ({conn.close_code})"

    async def _supervise(self) -> None:
        st = self._st
        while True:
            conn = self._conn
            assert conn is not None
            reason = await self._read(conn)
            if self._closing:
                return
            dropped_at = time.monotonic()
            planned, self._rollover_due = self._rollover_due, False
            self._ready.clear()
            self._conn = None
            with contextlib.suppress(Exception):
                await conn.close()
            # A committed turn the server had not answered yet, or (planned) a reply that
            # raced the close, is asked for again on the new connection.
            reask = st.reply_due_at is not None or (planned and bool(st.responses.active))
            st.reply_due_at = None
            if planned:
                self._dispatch.out.abort(lost())  # a reply created during the switch
            else:
                log.warning("realtime: connection lost (%s); reconnecting", reason)
                self._dispatch.abort(lost())
            st.emit(Reconnecting(planned, "rollover" if planned else reason))
            st.changed()
            if st.fatal is not None:
                log.error("realtime: not reconnecting after fatal error %s", st.fatal[0])
                break
            try:
                new, attempt = await self._dial(immediate=planned)
            except ConnectError as e:
                st.emit(BackendError(e.code, f"could not reconnect: {e}", recoverable=False))
                break
            self._conn = new
            self._connected_at = time.monotonic()
            self._spawn(
                self._restore(
                    st.mirror.items,
                    attempt=0 if planned else attempt,
                    dropped_at=dropped_at,
                    reask=reask,
                )
            )
        self._closing = True
        self._st.changed()
        self._st.end()

    async def _restore(
        self,
        items: Sequence[Item],
        *,
        attempt: int | None,
        dropped_at: float | None = None,
        reask: bool = False,
    ) -> None:
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
                # The server refuses our config or history: a retry would be refused again.
                self._st.fatal = (e.code, str(e))
                self._st.emit(
                    BackendError(
                        e.code, f"replaying the conversation failed: {e}", recoverable=False
                    )
                )
                with contextlib.suppress(Exception):
                    await conn.close()
            return
        try:
            await self._uplink.flush(conn)
        except (ConnectionError, RuntimeError, aiohttp.ClientError):
            return  # dropped again while catching up: the supervisor takes over
        if reask:
            self._st.responses.queued.appendleft(OpenAIResponseHandle())
        self._ready.set()
        self._st.changed()
        if attempt == 0:
            self.rollovers += 1
        elif attempt is not None:
            self.reconnects += 1
        if attempt is not None:
            downtime = 0.0 if dropped_at is None else (time.monotonic() - dropped_at) * 1000
            self._st.emit(Reconnected(attempt, planned=attempt == 0, downtime_ms=downtime))

    # --- reply watchdog -------------------------------------------------------------------
    async def _watchdog(self) -> None:
        """Fails a reply that stalls: no output ``reply_start_timeout`` after it was asked
        for or created, or nothing ``reply_idle_timeout`` after its last event."""
        opts, st = self._opts, self._st
        start_to, idle_to = opts.reply_start_timeout, opts.reply_idle_timeout
        if start_to is None and idle_to is None:
            return
        while not self._closing:
            now = time.monotonic()
            deadline: float | None = None
            expired: str | None = None
            for r in st.responses.active.values():
                if r.id in self._timed_out:
                    continue
                limit = start_to if not r.output_seen else idle_to
                if limit is None:
                    continue
                due = (r.created_at if not r.output_seen else r.last_event_at) + limit
                if due <= now:
                    expired = f"reply {r.id} sent nothing for {limit:.1f} s"
                    self._timed_out.add(r.id)
                    break
                deadline = due if deadline is None else min(deadline, due)
            if expired is None and start_to is not None:
                for h in st.responses.sent:
                    if h.sent_at is None or h.request_id in self._timed_out:
                        continue
                    due = h.sent_at + start_to
                    if due <= now:
                        expired = f"no reply created {start_to:.1f} s after it was requested"
                        self._timed_out.add(h.request_id)
                        break
                    deadline = due if deadline is None else min(deadline, due)
            if expired is not None:
                await self._stalled(expired)
                continue
            await st.wait_changed(None if deadline is None else deadline - now)

    async def _stalled(self, what: str) -> None:
        """A stalled reply: report it and rebuild the connection (which fails the reply)."""
        log.warning("realtime: %s; reconnecting", what)
        self._st.emit(BackendError("response_timeout", f"realtime: {what}", recoverable=True))
        conn = self._conn
        if conn is not None and self._ready.is_set():
            self._ready.clear()
            with contextlib.suppress(Exception):
                await conn.close()

    def request_rollover(self) -> None:
        """Roll over to a fresh connection at the next quiet moment (as the session limit
        does): nothing in flight is lost. For credential rotation, tests and drills."""
        self._roll_now.set()
        self._st.changed()

    async def _rollover(self) -> None:
        """Planned reconnect before the service's session limit (or when requested), at a
        quiet moment: no caller turn unanswered, no reply active or asked for, no tool
        output outstanding."""
        limit = self._opts.max_session_duration
        st = self._st
        while not self._closing:
            started = self._connected_at
            wait = None if limit is None else max(0.0, started + limit - time.monotonic())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._roll_now.wait(), wait)
            if self._connected_at != started and not self._roll_now.is_set():
                continue  # reconnected meanwhile: a fresh session, a fresh limit
            self.rollover_pending.set()
            await st.wait_until(lambda: self._closing or (st.quiet and self._ready.is_set()))
            self.rollover_pending.clear()
            self._roll_now.clear()
            if self._closing:
                return
            conn = self._conn
            if conn is None:
                continue
            log.info("realtime: rolling the session over")
            started = self._connected_at
            self._rollover_due = True
            self._ready.clear()
            await conn.close()
            await st.wait_until(partial(self._moved_on, started))

    def _moved_on(self, since: float) -> bool:
        return self._closing or self._connected_at != since
