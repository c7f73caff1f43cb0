"""`AgentSession`: wires transport, turn detection, backend, playout and tools.

Data flows one way: caller audio -> `InputPath` -> backend; backend events are
routed by `BackendRouter` to the conversation, the `Reply` they belong to,
`Playout` and `ToolRunner`. Requests to the backend (sync, replies, cancel,
truncate) go through one lock so they reach it in the order decided. The
session owns the one reply policy: it never asks a backend for a reply while
another is active (unless the policy says cancel it first).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from .agent import Agent
from .backend import Backend, BackendSession, ResponseHandle, ToolChoice
from .barge_in import BargeIn
from .captions import Captions
from .conversation import Conversation, FunctionCall, FunctionCallOutput, Message
from .emitter import Emitter, Handler
from .errors import BackendErrorException, ResponseActiveError, SessionClosedError
from .events import (
    AgentState,
    AgentStateChanged,
    ConversationItemAdded,
    MetricsCollected,
    SessionClosed,
    SessionError,
    ToolExecuted,
    UserState,
    UserStateChanged,
)
from .handoff import hand_off
from .idle import Scheduler, watch_idle
from .input_path import InputPath
from .interruption import PendingInterruption
from .logs import bind_session_id, new_session_id
from .playout import Playout
from .replies import Replies
from .reply import Reply, ReplyPolicy, SettleContext
from .routing import BackendRouter
from .session_live import LiveChanges
from .tasks import TaskSet
from .tool_provider import ProviderTools
from .tool_runner import ToolRunner
from .tools import FunctionTool
from .transport import Transport
from .vad import VAD, EnergyVAD, SpeechEnd, SpeechStart, TurnDetector, TurnOptions

logger = logging.getLogger("duplex.agents.session")
E = TypeVar("E")
T = TypeVar("T")


class AgentSession(LiveChanges):
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
        resume_false_interruption: bool = False,
        false_interruption_timeout: float = 1.5,
        user_idle_timeout: float | None = 15.0,
        max_idle_prompts: int = 1,
        scheduler: Scheduler | None = None,
    ) -> None:
        if reply_policy not in ("queue", "cancel_existing", "reject"):
            raise ValueError(f"unknown reply_policy {reply_policy!r}")
        self.agent = agent
        self.backend = backend
        self.caps = backend.capabilities
        self.turn = turn or TurnOptions()
        self._allow_interruptions = allow_interruptions
        self.interrupt_min_speech_ms = interrupt_min_speech_ms
        self.resume_false_interruption = resume_false_interruption
        self.false_interruption_timeout = false_interruption_timeout
        self.max_tool_steps = max_tool_steps
        self.reply_policy: ReplyPolicy = reply_policy
        if vad is None and (not self.caps.server_vad or local_vad_for_barge_in):
            if not self.caps.server_vad:
                logger.warning("no VAD given: using EnergyVAD; pass a WebRTC or Silero VAD")
            vad = EnergyVAD() if not self.caps.server_vad else None
        self.vad = vad
        self.conversation = Conversation()
        self._emitter = Emitter()
        self.replies = Replies()
        self._tool_list: list[FunctionTool] = agent.tools
        self.tools = ToolRunner(
            self._tool_list,
            self._on_tool_output,
            on_handoff=self._tool_handoff,
            on_failure=lambda name, exc: self.report_error("tool_failed", repr(exc), True),
        )
        self.control = asyncio.Lock()
        self._providers = ProviderTools(agent.mcp_servers, agent.tools, self._set_tools)
        self._tasks = TaskSet(
            lambda name, exc: self.emit(SessionError("internal_error", repr(exc), True))
        )
        self._backend: BackendSession | None = None
        self._transport: Transport | None = None
        self.playout: Playout | None = None
        self.input: InputPath | None = None
        self._agent_state: AgentState = "initializing"
        self._user_state: UserState = "listening"
        self.user_turns = 0
        self.tool_steps = 0
        self._closing = False
        self.captions = Captions()
        #: The server cancels a reply on caller speech itself (may be turned off at start).
        self.server_interrupts = self.caps.server_interrupts
        #: The server answers the turns its VAD detects (may be turned off at start).
        self.server_replies = self.caps.server_replies
        self.barge_in = BargeIn(self)
        self._router = BackendRouter(self)
        self.closed = asyncio.Event()
        #: The call's id, on every log record of the call (a runtime may set its own before start).
        self.id: str = new_session_id()
        #: Unanswered "are you still there?" prompts before `Agent.on_user_idle` ends the call.
        self.max_idle_prompts = max_idle_prompts
        self._idle = watch_idle(self, user_idle_timeout, scheduler)

    # public API -------------------------------------------------------------------------
    @property
    def agent_state(self) -> AgentState:
        return self._agent_state

    @property
    def user_state(self) -> UserState:
        return self._user_state

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            raise SessionClosedError("session not started")
        return self._transport

    @property
    def backend_session(self) -> BackendSession:
        if self._backend is None:
            raise SessionClosedError("session not started")
        return self._backend

    @property
    def allow_interruptions(self) -> bool:
        """The agent's setting, else the session's; off where nothing could detect speech."""
        allow = self.agent.allow_interruptions
        allow = self._allow_interruptions if allow is None else allow
        return allow and (
            not self.caps.server_vad or self.caps.server_interrupts or self.vad is not None
        )

    @allow_interruptions.setter
    def allow_interruptions(self, value: bool) -> None:
        self._allow_interruptions = value

    @property
    def min_interruption_ms(self) -> float:
        ms = self.agent.min_interruption_ms
        return self.interrupt_min_speech_ms if ms is None else ms

    @property
    def resumes_false_interruptions(self) -> bool:
        """Pause instead of cut on caller speech (agent's setting, else the session's)."""
        on = self.agent.resume_false_interruption
        on = self.resume_false_interruption if on is None else on
        return on and self.caps.user_transcription

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
        bind_session_id(self.id)  # every task spawned from here on logs with the call's id
        self._transport = transport
        await transport.start()
        self._tool_list = await self._providers.start()
        self.tools.set_tools(self._tool_list)
        self._backend = await self.backend.connect(
            instructions=self.agent.instructions,
            tools=self._tool_list,
            conversation=self.conversation,
        )
        if self.caps.server_vad and (
            self.resume_false_interruption or self.agent.resume_false_interruption
        ):
            # The server would cancel on any noise and answer it: the session decides both.
            async with self.control:
                await self._backend.update_options(server_interrupts=False, server_replies=False)
            self.server_interrupts = self.server_replies = False
        self.playout = Playout(
            transport.audio_output,
            self.caps.output_sample_rate,
            on_item_started=self._on_item_started,
            on_idle=self.on_idle,
        )
        self.playout.start()
        detector = (
            TurnDetector(self.vad, self.turn, input_rate=self.caps.input_sample_rate)
            if self.vad is not None
            else None
        )
        self.input = InputPath(
            self.caps.input_sample_rate,
            self._backend.push_audio,
            detector=detector,
            stream_all=self.caps.server_vad,
            on_speech_start=self._on_local_speech_start,
            on_speech_end=self._on_local_speech_end,
            on_frame=self._on_input_frame,
            push_nowait=self._backend.push_audio_nowait,
        )
        transport.set_text_handler(self.send_text)
        self.spawn(self.input.serve(transport.audio_input), "input")
        self.spawn(self._router.run(self._backend), "backend-events")
        self.spawn(self._watch_transport(transport), "transport-watch")
        self.set_agent_state("listening")
        await self.agent.on_enter(self)

    async def generate_reply(
        self, *, instructions: str | None = None, tool_choice: ToolChoice | None = None
    ) -> ResponseHandle:
        """Ask for a reply now; what happens during an active one is `reply_policy`."""
        return await self.reply_for_turn(instructions=instructions, tool_choice=tool_choice)

    async def reply_for_turn(
        self,
        *,
        instructions: str | None = None,
        tool_choice: ToolChoice | None = None,
        speech_end_at: float | None = None,
    ) -> ResponseHandle:
        """`generate_reply` for the caller's turn that ended at ``speech_end_at`` (metrics)."""
        if self.replies.busy:
            if self.reply_policy == "reject":
                raise ResponseActiveError("a reply is already active (reply_policy='reject')")
            if self.reply_policy == "cancel_existing":
                await self.interrupt()
        await self.replies.wait_idle()
        return await self.create_reply(
            instructions=instructions, tool_choice=tool_choice, speech_end_at=speech_end_at
        )

    async def send_text(self, text: str) -> None:
        """Text typed by the caller: becomes a user message, then a reply."""
        self._idle.user_active()
        self.append(Message.text_message("user", text))
        self.new_user_turn()
        await self.sync()
        await self.generate_reply()

    async def interrupt(self) -> None:
        """Stop the agent now, as a barge-in would (never paused, always cut)."""
        await self.barge_in.interrupt(onset_at=None, source="api")

    async def update_agent(self, agent: Agent) -> None:
        """Hand the call to ``agent``: same connection, same conversation (or its policy's)."""
        await hand_off(self, agent)

    async def _tool_handoff(self, call: FunctionCall, agent: Agent) -> None:
        await self.update_agent(agent)

    async def sync(self) -> None:
        """Push edits made to `conversation` by application code to the backend."""
        async with self.control:
            try:
                await self.backend_session.sync(self.conversation)
            except BackendErrorException as e:
                self.report_error(e.code, str(e), e.recoverable)

    async def aclose(self, reason: str = "closed") -> None:
        if self._closing:
            await self.closed.wait()
            return
        self._closing = True
        self._idle.close()
        self.barge_in.cancel()
        await self.tools.aclose()
        await self._providers.aclose()
        await self._tasks.cancel_all()
        if self.playout is not None:
            await self.playout.aclose()
        if self._backend is not None:
            with contextlib.suppress(Exception):
                await self._backend.aclose()
        if self._transport is not None:
            with contextlib.suppress(Exception):
                await self._transport.aclose()
        self.set_agent_state("closed")
        self.emit(SessionClosed(reason))
        self.closed.set()

    @property
    def closing(self) -> bool:
        return self._closing

    # input side -------------------------------------------------------------------------
    async def _on_local_speech_start(self, ev: SpeechStart, at: float) -> None:
        self.set_user_state("speaking")
        await self.barge_in.speech_started(at, source="local")

    def _on_input_frame(self) -> Awaitable[None] | None:
        """After each caller frame: the barge-in check, awaited only when it is due."""
        det = self.input.detector if self.input else None
        if det is not None and det.speaking and self.barge_in.continues_due(det.speech_ms):
            return self.barge_in.speech_continues(det.speech_ms)
        return None

    async def _on_local_speech_end(self, ev: SpeechEnd, at: float) -> None:
        self.set_user_state("listening")
        self.barge_in.speech_ended()
        if self.caps.server_vad:
            return
        self.new_user_turn()
        self.spawn(self._end_user_turn(at, self.barge_in.pending), "user-turn")

    async def _end_user_turn(self, speech_end_at: float, held: PendingInterruption | None) -> None:
        async with self.control:
            await self.backend_session.commit_audio()
        if held is not None and not await self.barge_in.turn_is_real(held):
            return  # a cough over the reply: it resumed, this turn asks for nothing
        self.set_agent_state("thinking")
        await self.reply_for_turn(speech_end_at=speech_end_at)

    def new_user_turn(self) -> None:
        self.user_turns += 1
        self.tool_steps = 0

    # replies ----------------------------------------------------------------------------
    async def create_reply(
        self,
        *,
        instructions: str | None = None,
        tool_choice: ToolChoice | None = None,
        speech_end_at: float | None = None,
    ) -> ResponseHandle:
        async with self.control:
            handle = await self.backend_session.create_response(
                instructions=instructions, tool_choice=tool_choice
            )
        reply = self.replies.requested(handle, speech_end_at=speech_end_at)
        handle.created.add_done_callback(lambda f: self._on_request_settled(reply, f))
        return handle

    def _on_request_settled(self, reply: Reply, fut: asyncio.Future[str]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self.replies.created(reply, fut.result())
            return
        self.replies.request_failed(reply)
        exc = None if fut.cancelled() else fut.exception()
        code = getattr(exc, "code", "response_request_failed")
        self.report_error(str(code), str(exc or "cancelled"), True)

    def settle_context(self) -> SettleContext:
        return SettleContext(
            backend=self.backend_session,
            control=self.control,
            conversation=self.conversation,
            truncation=self.caps.truncation,
            on_error=lambda e: self.report_error(e.code, str(e), True),
        )

    async def settle(self, reply: Reply, *, cancel: bool) -> None:
        """Cut a reply to what was heard and tell the captions and the backend."""
        cut = await reply.settle(self.settle_context(), cancel=cancel)
        for item_id in cut.delete:  # nothing of it was heard: its caption is empty
            self.emit(self.captions.settled(item_id, ""))
        for item_id in reply.items:
            item = self.conversation.get(item_id)
            if not isinstance(item, Message):
                continue
            if item_id in cut.truncate and not self.caps.truncation:
                # No server update will come: caption what we hold.
                self.emit(self.captions.settled(item_id, item.text))
            elif item_id not in cut.truncate:
                caption = self.captions.release(item)  # heard in full: nothing was cut
                if caption is not None:
                    self.emit(caption)
        if cut.delete:
            await self.sync()
        self.maybe_metrics(reply)

    def _on_item_started(self, item_id: str, at: float) -> None:
        reply = self.replies.owner(item_id)
        if reply is not None:
            reply.first_frame(at)
        self.set_agent_state("speaking")

    def on_idle(self) -> None:
        if self._agent_state == "closed":
            return
        busy = self.replies.busy or self.tools.running
        self.set_agent_state("thinking" if busy else "listening")
        for reply in self.replies.tracked():
            self.maybe_metrics(reply)

    def maybe_metrics(self, reply: Reply) -> None:
        if reply.metrics_sent or reply.live:
            return
        if reply.interrupted:
            if not reply.settled:
                return
        elif self.playout is not None:
            if self.playout.active:
                return
            reply.note_heard(self.playout)
        self.emit(MetricsCollected(reply.metrics()))
        self.replies.forget(reply)  # accounted for: keep long calls small

    # tools ------------------------------------------------------------------------------
    async def follow_up_tools(
        self, response_id: str, user_turns: int, speech_end_at: float | None
    ) -> None:
        await self.tools.wait_batch(response_id)
        batch = self.tools.pop_batch(response_id)
        if batch is None or batch.interrupted or self._closing or self.caps.auto_tool_reply:
            return
        if self.user_turns != user_turns:
            return  # the caller spoke meanwhile; their turn's reply covers the outputs
        self.tool_steps += 1
        choice: ToolChoice | None = "none" if self.tool_steps >= self.max_tool_steps else None
        await self.replies.wait_idle()
        await self.create_reply(tool_choice=choice, speech_end_at=speech_end_at)

    async def _on_tool_output(
        self, call: FunctionCall, output: FunctionCallOutput, took: float
    ) -> None:
        if call.id not in self.conversation:
            self.append(call)
        self.append(output)
        self.emit(ToolExecuted(call, output, took))
        await self.sync()

    # helpers ----------------------------------------------------------------------------
    def append(self, item: Any) -> None:
        self.conversation.append(item)
        self.emit(ConversationItemAdded(item))

    def set_agent_state(self, state: AgentState) -> None:
        if state != self._agent_state and self._agent_state != "closed":
            old, self._agent_state = self._agent_state, state
            self.emit(AgentStateChanged(old, state))

    def set_user_state(self, state: UserState) -> None:
        if state != self._user_state:
            old, self._user_state = self._user_state, state
            self.emit(UserStateChanged(old, state))

    def emit(self, event: object) -> None:
        self._emitter.emit(event)
        if self._transport is not None:
            try:
                self._transport.publish(event)
            except Exception:
                logger.exception("transport could not publish %s", type(event).__name__)

    def report_error(
        self,
        code: str,
        message: str,
        recoverable: bool,
        param: str | None = None,
        event_id: str | None = None,
    ) -> None:
        logger.warning("session error %s: %s", code, message)
        self.emit(SessionError(code, message, recoverable, param, event_id))
        if not recoverable and not self._closing:
            self.spawn(self.aclose(f"fatal error: {code}"), "close")

    async def _watch_transport(self, transport: Transport) -> None:
        await transport.closed.wait()
        if not self._closing:
            self.spawn(self.aclose("transport closed"), "close")

    def spawn(self, coro: Coroutine[Any, Any, T] | Awaitable[T], name: str) -> asyncio.Task[T]:
        return self._tasks.spawn(coro, name)
