"""`AgentSession`: wires transport, turn detection, backend, playout and tools.

Data flows one way: caller audio -> `InputPath` -> backend; backend events ->
conversation, `Playout`, `ToolRunner`. Requests to the backend (sync, replies,
cancel, truncate) go through one lock so they reach it in the order decided.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from .agent import Agent
from .backend import (
    AudioDelta,
    Backend,
    BackendError,
    BackendEvent,
    BackendSession,
    FunctionCallRequested,
    ItemAdded,
    ItemDeleted,
    ItemUpdated,
    RateLimits,
    Reconnected,
    ResponseDone,
    ResponseHandle,
    ResponseStarted,
    SpeechStarted,
    SpeechStopped,
    TextDelta,
    ToolChoice,
    UserTranscript,
)
from .captions import Captions
from .conversation import Conversation, FunctionCall, FunctionCallOutput, Message
from .emitter import Emitter, Handler
from .errors import BackendErrorException, ResponseActiveError, SessionClosedError
from .events import (
    AgentInterrupted,
    AgentState,
    AgentStateChanged,
    ConversationItemAdded,
    SessionClosed,
    SessionError,
    ToolCalled,
    ToolExecuted,
    UserState,
    UserStateChanged,
    UserTranscribed,
)
from .input_path import InputPath
from .interruption import settle_interrupted
from .metrics import emit_turn_metrics
from .playout import Playout
from .responses import ReplyPolicy, ResponseState, ResponseTracker
from .tasks import TaskSet
from .tool_provider import ProviderTools
from .tool_runner import ToolRunner
from .tools import FunctionTool
from .transport import Transport
from .vad import VAD, EnergyVAD, SpeechEnd, SpeechStart, TurnDetector, TurnOptions

logger = logging.getLogger("duplex.agents.session")
E = TypeVar("E")
T = TypeVar("T")


class AgentSession:
    """One conversation between a caller and an agent over one transport."""

    def __init__(
        self,
        *,
        agent: Agent,
        backend: Backend,
        vad: VAD | None = None,
        turn: TurnOptions | None = None,
        allow_interruptions: bool = True,
        interrupt_min_speech_ms: float = 0.0,
        max_tool_steps: int = 3,
        reply_policy: ReplyPolicy = "queue",
        local_vad_for_barge_in: bool = True,
    ) -> None:
        self.agent = agent
        self.backend = backend
        self.caps = backend.capabilities
        self.turn = turn or TurnOptions()
        self.allow_interruptions = allow_interruptions and (
            not self.caps.server_vad or self.caps.server_interrupts or vad is not None
        )
        self.interrupt_min_speech_ms = interrupt_min_speech_ms
        self.max_tool_steps = max_tool_steps
        self.reply_policy: ReplyPolicy = reply_policy
        if vad is None and (not self.caps.server_vad or local_vad_for_barge_in):
            if not self.caps.server_vad:
                logger.warning("no VAD given: using EnergyVAD; pass a WebRTC or Silero VAD")
            vad = EnergyVAD() if not self.caps.server_vad else None
        self.vad = vad
        self.conversation = Conversation()
        self._emitter = Emitter()
        self._responses = ResponseTracker()
        self._tools = ToolRunner(agent.tools, self._on_tool_output)
        self._control = asyncio.Lock()
        self._providers = ProviderTools(
            agent.mcp_servers, agent.tools, self._provider_tools_changed
        )
        self._tasks = TaskSet(
            lambda name, exc: self._emit_transport(SessionError("internal_error", repr(exc), True))
        )
        self._backend: BackendSession | None = None
        self._transport: Transport | None = None
        self._playout: Playout | None = None
        self._input: InputPath | None = None
        self._agent_state: AgentState = "initializing"
        self._user_state: UserState = "listening"
        self._speech_onset_at: float | None = None
        self._user_turns = 0
        self._tool_steps = 0
        self._closing = False
        self._captions = Captions()
        self.closed = asyncio.Event()

    # public API -------------------------------------------------------------------------
    @property
    def agent_state(self) -> AgentState:
        return self._agent_state

    @property
    def user_state(self) -> UserState:
        return self._user_state

    @property
    def backend_session(self) -> BackendSession:
        if self._backend is None:
            raise SessionClosedError("session not started")
        return self._backend

    def on(self, event_type: type[E], handler: Handler[E]) -> Callable[[], None]:
        """Subscribe to a session event class; returns an unsubscribe function."""
        return self._emitter.on(event_type, handler)

    def next_event(
        self, event_type: type[E], predicate: Callable[[E], bool] | None = None
    ) -> asyncio.Future[E]:
        """A future for the next matching event, subscribed before this call returns.

        Use it to wait for what an action causes: subscribe first, then act.
        """
        return self._emitter.next_event(event_type, predicate)

    async def wait_for(
        self,
        event_type: type[E],
        predicate: Callable[[E], bool] | None = None,
        *,
        timeout: float = 30.0,
    ) -> E:
        return await self._emitter.wait_for(event_type, predicate, timeout=timeout)

    async def start(self, transport: Transport) -> None:
        self._transport = transport
        await transport.start()
        tools = await self._providers.start()
        self._tools.set_tools(tools)
        self._backend = await self.backend.connect(
            instructions=self.agent.instructions,
            tools=tools,
            conversation=self.conversation,
        )
        out = transport.audio_output
        self._playout = Playout(
            out,
            self.caps.output_sample_rate,
            on_first_frame=self._on_first_frame,
            on_idle=self._on_idle,
        )
        self._playout.start()
        detector = (
            TurnDetector(self.vad, self.turn, input_rate=self.caps.input_sample_rate)
            if self.vad is not None
            else None
        )
        self._input = InputPath(
            self.caps.input_sample_rate,
            self._backend.push_audio,
            detector=detector,
            stream_all=self.caps.server_vad,
            on_speech_start=self._on_local_speech_start,
            on_speech_end=self._on_local_speech_end,
            on_frame=self._on_input_frame,
        )
        transport.set_text_handler(self.send_text)
        self._spawn(self._input.run(transport.audio_input.frames()), "input")
        self._spawn(self._consume_backend(self._backend), "backend-events")
        self._spawn(self._watch_transport(transport), "transport-watch")
        self._set_agent_state("listening")
        await self.agent.on_enter(self)

    async def generate_reply(
        self, *, instructions: str | None = None, tool_choice: ToolChoice | None = None
    ) -> ResponseHandle:
        """Ask for a reply now; what happens during an active one is `reply_policy`."""
        if self._responses.busy:
            if self.reply_policy == "reject":
                raise ResponseActiveError("a reply is already active (reply_policy='reject')")
            if self.reply_policy == "cancel_existing":
                await self.interrupt()
            await self._responses.wait_idle()
        return await self._create_response(instructions=instructions, tool_choice=tool_choice)

    async def send_text(self, text: str) -> None:
        """Text typed by the caller: becomes a user message, then a reply."""
        self._append(Message.text_message("user", text))
        self._user_turns += 1
        self._tool_steps = 0
        await self._sync()
        await self.generate_reply()

    async def interrupt(self) -> None:
        """Stop the agent now, as a barge-in would."""
        await self._interrupt(onset_at=None, source="api")

    async def update_instructions(self, text: str) -> None:
        self.agent.instructions = text
        async with self._control:
            await self.backend_session.update_instructions(text)

    async def _provider_tools_changed(self, tools: list[FunctionTool]) -> None:
        """An MCP server changed its tool list mid-call: the model sees the new list."""
        self._tools.set_tools(tools)
        if self._backend is not None:
            async with self._control:
                await self._backend.update_tools(tools)

    async def sync(self) -> None:
        """Push edits made to `conversation` by application code to the backend."""
        await self._sync()

    async def aclose(self, reason: str = "closed") -> None:
        if self._closing:
            await self.closed.wait()
            return
        self._closing = True
        await self._tools.aclose()
        await self._providers.aclose()
        await self._tasks.cancel_all()
        if self._playout is not None:
            await self._playout.aclose()
        if self._backend is not None:
            with contextlib.suppress(Exception):
                await self._backend.aclose()
        if self._transport is not None:
            with contextlib.suppress(Exception):
                await self._transport.aclose()
        self._set_agent_state("closed")
        self._emit_transport(SessionClosed(reason))
        self.closed.set()

    # input side -------------------------------------------------------------------------
    async def _on_local_speech_start(self, ev: SpeechStart, at: float) -> None:
        self._speech_onset_at = at
        self._set_user_state("speaking")
        if self.interrupt_min_speech_ms <= 0:
            await self._interrupt(onset_at=at, source="local")

    async def _on_input_frame(self) -> None:
        det = self._input.detector if self._input else None
        if (
            det is not None
            and det.speaking
            and self.interrupt_min_speech_ms > 0
            and det.speech_ms >= self.interrupt_min_speech_ms
        ):
            await self._interrupt(onset_at=self._speech_onset_at, source="local")

    async def _on_local_speech_end(self, ev: SpeechEnd, at: float) -> None:
        self._set_user_state("listening")
        if self.caps.server_vad:
            return
        self._user_turns += 1
        self._tool_steps = 0
        self._responses.next_speech_end_at = at
        self._spawn(self._end_user_turn(), "user-turn")

    async def _end_user_turn(self) -> None:
        async with self._control:
            await self.backend_session.commit_audio()
        self._set_agent_state("thinking")
        await self.generate_reply()

    # interruption -----------------------------------------------------------------------
    async def _interrupt(self, *, onset_at: float | None, source: str) -> None:
        playout = self._playout
        resp = self._responses.current
        active = resp is not None and not resp.done.is_set() and not resp.interrupted
        if source != "api" and not self.allow_interruptions:
            return
        if self._responses.cancel_pending() and not active:
            resp = None  # nothing audible yet; the requested reply is cut when it starts
        if playout is None or not (playout.active or active):
            return
        t0 = onset_at if onset_at is not None else time.monotonic()
        heard = await playout.stop()
        latency_ms = max(0.0, (time.monotonic() - t0) * 1000.0)
        targets = [r for r in (resp,) if r is not None and not r.interrupted]
        for r in targets:
            self._captions.interrupted(r.items)
            r.interrupted = True
            r.interruption_ms = latency_ms
            r.played_ms = sum(heard.get(i, 0.0) for i in r.items)
            batch = self._tools.find(r.response_id)
            if batch is not None:
                batch.interrupted = True
        item_id = next(reversed(heard), None) if heard else None
        self._emit_transport(
            AgentInterrupted(item_id, heard.get(item_id, 0.0) if item_id else 0.0, latency_ms)
        )
        self._set_agent_state("listening")
        # With interrupt_response the server cancels on the caller's speech itself; a second
        # cancel from us would race its response.done and be refused.
        server_cancels = source != "api" and self.caps.server_interrupts
        for r in targets:
            self._spawn(self._settle_interrupted(r, heard, cancel=not server_cancels), "settle")

    async def _settle_interrupted(
        self, resp: ResponseState, heard: dict[str, float], cancel: bool
    ) -> None:
        cut = await settle_interrupted(
            self.backend_session,
            self._control,
            self.conversation,
            resp,
            heard,
            cancel=cancel,
            truncation=self.caps.truncation,
            on_error=lambda e: self._report_error(e.code, str(e), True),
        )
        for item_id in cut.delete:  # nothing of it was heard: its caption is empty
            self._emit_transport(self._captions.settled(item_id, ""))
        if not self.caps.truncation:  # no server update will come: caption what we hold
            for item_id in cut.truncate:
                item = self.conversation.get(item_id)
                if isinstance(item, Message):
                    self._emit_transport(self._captions.settled(item_id, item.text))
        if cut.delete:
            await self._sync()
        self._maybe_metrics(resp)

    # backend side -----------------------------------------------------------------------
    async def _consume_backend(self, backend: BackendSession) -> None:
        try:
            async for ev in backend.events():
                try:
                    await self._handle(ev)
                except Exception:
                    logger.exception("error handling backend event %s", type(ev).__name__)
        except Exception as e:
            logger.exception("backend event stream failed")
            self._report_error("backend_stream_failed", str(e), False)
        if not self._closing:
            self._spawn(self.aclose("backend closed"), "close")

    async def _handle(self, ev: BackendEvent) -> None:
        if isinstance(ev, AudioDelta):
            self._on_audio(ev)
        elif isinstance(ev, TextDelta):
            resp = self._responses.get(ev.response_id)
            if resp is not None and not resp.interrupted:
                self._emit_transport(self._captions.delta(ev.item_id, ev.text))
        elif isinstance(ev, ResponseStarted):
            state = self._responses.started(ev.response_id, ev.request_id)
            if state.cancel_on_start:
                state.interrupted = True
                self._spawn(self._settle_interrupted(state, {}, cancel=True), "settle")
                return
            if self._playout is not None:
                self._playout.mark_new_response()
            if self._agent_state != "speaking":
                self._set_agent_state("thinking")
        elif isinstance(ev, ResponseDone):
            self._on_response_done(ev)
        elif isinstance(ev, FunctionCallRequested):
            call = FunctionCall(ev.call_id, ev.name, ev.arguments, id=ev.item_id)
            if ev.item_id not in self.conversation:
                self._append(call)
            if self._tools.submit(ev.response_id, call) is not None:
                self._emit_transport(ToolCalled(call))
        elif isinstance(ev, ItemAdded):
            self._on_item(ev.item, ev.previous_item_id)
        elif isinstance(ev, ItemUpdated):
            if ev.item.id in self.conversation:  # a late update must not revive a deleted item
                self._on_item(ev.item, None)
        elif isinstance(ev, ItemDeleted):
            self.conversation.remove(ev.item_id)
        elif isinstance(ev, UserTranscript):
            if ev.error:
                self._report_error("transcription_failed", ev.error, True)
            self._emit_transport(UserTranscribed(ev.item_id, ev.text, ev.final))
        elif isinstance(ev, SpeechStarted):
            self._set_user_state("speaking")
            self._speech_onset_at = self._speech_onset_at or time.monotonic()
            await self._interrupt(onset_at=None, source="server")
        elif isinstance(ev, SpeechStopped):
            self._user_turns += 1
            self._tool_steps = 0
            self._responses.next_speech_end_at = time.monotonic()
            if self.vad is None:
                self._set_user_state("listening")
            if not self.caps.server_replies:
                self._spawn(self.generate_reply(), "server-turn-reply")
        elif isinstance(ev, BackendError):
            self._report_error(ev.code, ev.message, ev.recoverable)
        elif isinstance(ev, (Reconnected, RateLimits)):
            logger.info("backend: %s", ev)

    def _on_audio(self, ev: AudioDelta) -> None:
        resp = self._responses.get(ev.response_id) or self._responses.started(ev.response_id, None)
        if resp.interrupted or self._playout is None:
            return  # audio of a reply the caller already cut off
        if resp.first_delta_at is None:
            resp.first_delta_at = time.monotonic()
        if ev.item_id not in resp.items:
            resp.items.append(ev.item_id)
        self._playout.push(ev.item_id, ev.frame)

    def _on_item(self, item: Any, previous_item_id: str | None) -> None:
        existing = self.conversation.get(item.id)
        assistant = isinstance(item, Message) and item.role == "assistant"
        if existing is None:
            if previous_item_id is not None:
                self.conversation.insert_after(previous_item_id, item)
            else:
                self.conversation.append(item)
            self._emit_transport(ConversationItemAdded(item))
            resp = self._responses.current
            live = resp is not None and not resp.done.is_set()
            if assistant and live and resp is not None and item.id not in resp.items:
                resp.items.append(item.id)
                if resp.interrupted:
                    self._captions.interrupted([item.id])
        elif existing != item:
            self.conversation.replace(item)
        else:
            return  # an acknowledgement of what we already hold
        if assistant and item.complete:
            caption = self._captions.final(item)
            if caption is not None:
                self._emit_transport(caption)

    def _on_response_done(self, ev: ResponseDone) -> None:
        resp = self._responses.finished(ev)
        if self._playout is not None and not resp.interrupted:
            self._playout.end_of_response()
        batch = self._tools.find(ev.response_id)
        if batch is not None and batch.calls:
            batch.response_done = True
            # A reply that only called tools said nothing: the caller still waits from speech end.
            carry = resp.speech_end_at if resp.first_played_at is None else None
            self._spawn(
                self._follow_up_tools(ev.response_id, self._user_turns, carry), "tool-follow-up"
            )
        else:
            self._tools.pop_batch(ev.response_id)
        if ev.status == "failed":
            self._report_error("response_failed", ev.error or "response failed", True)
        if self._playout is None or not self._playout.active:
            self._on_idle()
        self._maybe_metrics(resp)

    async def _follow_up_tools(
        self, response_id: str, user_turns: int, speech_end_at: float | None
    ) -> None:
        await self._tools.wait_batch(response_id)
        batch = self._tools.pop_batch(response_id)
        if batch is None or batch.interrupted or self._closing or self.caps.auto_tool_reply:
            return
        if self._user_turns != user_turns:
            return  # the caller spoke meanwhile; their turn's reply covers the outputs
        self._tool_steps += 1
        choice: ToolChoice | None = "none" if self._tool_steps >= self.max_tool_steps else None
        await self._responses.wait_idle()
        self._responses.next_speech_end_at = speech_end_at
        await self._create_response(tool_choice=choice)

    async def _on_tool_output(
        self, call: FunctionCall, output: FunctionCallOutput, took: float
    ) -> None:
        if call.id not in self.conversation:
            self._append(call)
        self._append(output)
        self._emit_transport(ToolExecuted(call, output, took))
        await self._sync()

    # helpers ----------------------------------------------------------------------------
    async def _create_response(
        self, *, instructions: str | None = None, tool_choice: ToolChoice | None = None
    ) -> ResponseHandle:
        async with self._control:
            handle = await self.backend_session.create_response(
                instructions=instructions, tool_choice=tool_choice
            )
        self._responses.requested(handle)
        handle.created.add_done_callback(lambda f: self._on_request_settled(handle, f))
        return handle

    def _on_request_settled(self, handle: ResponseHandle, fut: asyncio.Future[str]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self._responses.request_failed(handle)
            exc = None if fut.cancelled() else fut.exception()
            code = getattr(exc, "code", "response_request_failed")
            self._report_error(str(code), str(exc or "cancelled"), True)

    async def _sync(self) -> None:
        async with self._control:
            try:
                await self.backend_session.sync(self.conversation)
            except BackendErrorException as e:
                self._report_error(e.code, str(e), e.recoverable)

    def _append(self, item: Any) -> None:
        self.conversation.append(item)
        self._emit_transport(ConversationItemAdded(item))

    def _on_first_frame(self, item_id: str) -> None:
        resp = self._responses.current
        if resp is not None and resp.first_played_at is None:
            resp.first_played_at = time.monotonic()
        self._set_agent_state("speaking")

    def _on_idle(self) -> None:
        if self._agent_state == "closed":
            return
        busy = self._responses.busy or self._tools.running
        self._set_agent_state("thinking" if busy else "listening")
        resp = self._responses.current
        if resp is not None and resp.done.is_set() and self._playout is not None:
            resp.played_ms = sum(self._playout.played_ms(i) for i in resp.items) or resp.played_ms
            self._maybe_metrics(resp)

    def _maybe_metrics(self, resp: ResponseState) -> None:
        if resp.metrics_sent or not resp.done.is_set():
            return
        if not resp.interrupted and self._playout is not None and self._playout.active:
            return
        emit_turn_metrics(self._emit_transport, resp)
        self._responses.forget(resp.response_id)  # accounted for: keep long calls small

    def _set_agent_state(self, state: AgentState) -> None:
        if state != self._agent_state and self._agent_state != "closed":
            old, self._agent_state = self._agent_state, state
            self._emit_transport(AgentStateChanged(old, state))

    def _set_user_state(self, state: UserState) -> None:
        if state != self._user_state:
            old, self._user_state = self._user_state, state
            self._emit_transport(UserStateChanged(old, state))

    def _emit_transport(self, event: object) -> None:
        self._emitter.emit(event)
        if self._transport is not None:
            try:
                self._transport.publish(event)
            except Exception:
                logger.exception("transport could not publish %s", type(event).__name__)

    def _report_error(self, code: str, message: str, recoverable: bool) -> None:
        logger.warning("session error %s: %s", code, message)
        self._emit_transport(SessionError(code, message, recoverable))
        if not recoverable and not self._closing:
            self._spawn(self.aclose(f"fatal error: {code}"), "close")

    async def _watch_transport(self, transport: Transport) -> None:
        await transport.closed.wait()
        if not self._closing:
            self._spawn(self.aclose("transport closed"), "close")

    def _spawn(self, coro: Coroutine[Any, Any, T] | Awaitable[T], name: str) -> asyncio.Task[T]:
        return self._tasks.spawn(coro, name)
