"""Text between the room and the session: transcripts and agent state out, chat in.

Out, in the format LiveKit's client components read:
- transcripts are text streams on ``lk.transcription``, one segment per
  conversation item (``lk.segment_id``), tied to the audio track they transcribe
  (``lk.transcribed_track_id``), marked final with ``lk.transcription_final``;
  the agent's words stream as they are generated, the caller's are re-sent whole
  on every update, attributed to the caller;
- the agent's state is the participant attribute ``lk.agent.state``.
In: text streams on ``lk.chat`` from the followed participant become user turns.

Everything outgoing goes through one queue and one task, so segments arrive in
order and a slow data channel never blocks the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from duplex.agents.events import AgentStateChanged, AgentTranscribed, UserTranscribed
from livekit import rtc

logger = logging.getLogger("duplex.plugins.livekit")

TOPIC_TRANSCRIPTION = "lk.transcription"
TOPIC_CHAT = "lk.chat"
ATTR_SEGMENT_ID = "lk.segment_id"
ATTR_TRACK_ID = "lk.transcribed_track_id"
ATTR_FINAL = "lk.transcription_final"
ATTR_AGENT_STATE = "lk.agent.state"

#: Our session states that LiveKit clients know ("closed" is said by leaving the room).
_LK_STATES = {"initializing", "listening", "thinking", "speaking"}
_MAX_PENDING = 2000


class TextWriter(Protocol):
    """What we need of ``rtc.TextStreamWriter``."""

    async def write(self, text: str) -> None: ...

    async def aclose(
        self, *, reason: str = ..., attributes: dict[str, str] | None = ...
    ) -> None: ...


@dataclass
class _Segment:
    writer: TextWriter
    sent: str


class RoomTextPublisher:
    """Turns session events into transcription streams and the agent-state attribute."""

    def __init__(
        self,
        room: rtc.Room,
        *,
        agent_track_sid: Callable[[], str | None],
        user_track_sid: Callable[[], str | None],
        user_identity: Callable[[], str | None],
    ) -> None:
        self._room = room
        self._agent_track_sid = agent_track_sid
        self._user_track_sid = user_track_sid
        self._user_identity = user_identity
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._segments: dict[str, _Segment] = {}
        self._task: asyncio.Task[None] | None = None
        self.state: str | None = None
        self.dropped = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="livekit-text-out"
            )

    def submit(self, event: object) -> None:
        if not isinstance(event, (AgentStateChanged, AgentTranscribed, UserTranscribed)):
            return
        if self._queue.qsize() >= _MAX_PENDING:
            self.dropped += 1
            return
        self._idle.clear()
        self._queue.put_nowait(event)

    async def flushed(self) -> None:
        """Return once everything submitted so far has been sent (or failed)."""
        await self._idle.wait()

    async def republish_state(self) -> None:
        """After a reconnect the server may have lost our attributes: set them again."""
        if self.state is not None:
            await self._set_state(self.state)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for seg in self._segments.values():
            with contextlib.suppress(Exception):
                await seg.writer.aclose()
        self._segments.clear()
        self._idle.set()

    # internals ---------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                if isinstance(event, AgentStateChanged):
                    if event.new in _LK_STATES:
                        await self._set_state(event.new)
                elif isinstance(event, AgentTranscribed):
                    await self._agent_text(event)
                elif isinstance(event, UserTranscribed):
                    await self._user_text(event)
            except Exception as e:  # the room may be reconnecting; the call goes on
                logger.warning("could not publish %s to the room: %s", type(event).__name__, e)
            finally:
                if self._queue.empty():
                    self._idle.set()

    async def _set_state(self, state: str) -> None:
        self.state = state
        if self._room.isconnected():
            await self._room.local_participant.set_attributes({ATTR_AGENT_STATE: state})

    def _attrs(self, segment_id: str, track_sid: str | None, final: bool) -> dict[str, str]:
        attrs = {ATTR_SEGMENT_ID: segment_id, ATTR_FINAL: "true" if final else "false"}
        if track_sid:
            attrs[ATTR_TRACK_ID] = track_sid
        return attrs

    async def _open(
        self, segment_id: str, track_sid: str | None, final: bool, sender: str | None = None
    ) -> TextWriter:
        kwargs: dict[str, object] = {}
        if sender:
            kwargs["sender_identity"] = sender
        writer: TextWriter = await self._room.local_participant.stream_text(
            topic=TOPIC_TRANSCRIPTION,
            attributes=self._attrs(segment_id, track_sid, final),
            **kwargs,  # type: ignore[arg-type]
        )
        return writer

    async def _agent_text(self, ev: AgentTranscribed) -> None:
        """Stream the agent's words; the event carries the text so far, we send what is new."""
        track = self._agent_track_sid()
        seg = self._segments.get(ev.item_id)
        if not ev.final:
            if seg is not None and ev.text.startswith(seg.sent):
                delta = ev.text[len(seg.sent) :]
            else:
                if seg is not None:  # the text was rewritten: start the segment over
                    await seg.writer.aclose()
                seg = _Segment(await self._open(ev.item_id, track, False), "")
                self._segments[ev.item_id] = seg
                delta = ev.text
            if delta:
                await seg.writer.write(delta)
                seg.sent += delta
            return
        # final: finish the running stream when the final text extends what it said;
        # otherwise (cut short by an interruption, or never streamed) send the whole text
        self._segments.pop(ev.item_id, None)
        if seg is not None and ev.text.startswith(seg.sent):
            rest = ev.text[len(seg.sent) :]
            if rest:
                await seg.writer.write(rest)
            await seg.writer.aclose(attributes=self._attrs(ev.item_id, track, True))
            return
        if seg is not None:
            await seg.writer.aclose()
        writer = await self._open(ev.item_id, track, True)
        if ev.text:
            await writer.write(ev.text)
        await writer.aclose()

    async def _user_text(self, ev: UserTranscribed) -> None:
        writer = await self._open(
            ev.item_id, self._user_track_sid(), ev.final, sender=self._user_identity()
        )
        if ev.text:
            await writer.write(ev.text)
        await writer.aclose()


ChatHandler = Callable[[str, str], Awaitable[None]]


class ChatInput:
    """Reads ``lk.chat`` text streams and hands complete messages to the session."""

    def __init__(self, room: rtc.Room, deliver: ChatHandler) -> None:
        self._room = room
        self._deliver = deliver
        self._tasks: set[asyncio.Task[None]] = set()
        self.registered = False

    def register(self) -> None:
        if not self.registered:
            self._room.register_text_stream_handler(TOPIC_CHAT, self._on_stream)
            self.registered = True

    def unregister(self) -> None:
        if self.registered:
            self._room.unregister_text_stream_handler(TOPIC_CHAT)
            self.registered = False

    def _on_stream(self, reader: rtc.TextStreamReader, participant_identity: str) -> None:
        task = asyncio.get_running_loop().create_task(self._read(reader, participant_identity))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read(self, reader: rtc.TextStreamReader, identity: str) -> None:
        try:
            text = await reader.read_all()
        except Exception as e:
            logger.warning("chat message from %s was cut off: %s", identity, e)
            return
        text = text.strip()
        if text:
            try:
                await self._deliver(text, identity)
            except Exception:
                logger.exception("handling a chat message from %s failed", identity)

    async def aclose(self) -> None:
        self.unregister()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
