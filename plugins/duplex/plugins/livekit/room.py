"""`RoomTransport`: the agent as a participant of a LiveKit room.

It connects with a token (given, or minted from LIVEKIT_* credentials), follows
one remote participant's microphone, publishes the agent's voice as one audio
track, and mirrors the session's transcripts and state into the room. The rtc
SDK reconnects on its own; we re-attach tracks and re-set our attributes after
it does, and close only when the room is gone or the caller left for good.

The room object is the seam: pass any ``rtc.Room`` (a job's room from the
worker, or in tests one whose network calls are replaced) and everything else
runs through the SDK's own events and objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from duplex.agents.errors import ConfigurationError, DuplexError
from duplex.agents.transport import Transport
from livekit import rtc

from .audio_io import RoomAudioInput, RoomAudioOutput
from .auth import LiveKitCredentials
from .participants import Kind, ParticipantFilter, ParticipantTracker, kind_name, parse_kinds
from .sip import (
    DtmfBuffer,
    DtmfCallback,
    SipCallInfo,
    SipControls,
    dtmf_from_event,
    run_callback,
)
from .text_io import ChatInput, RoomTextPublisher

logger = logging.getLogger("duplex.plugins.livekit")

ParticipantCallback = Callable[[rtc.RemoteParticipant | None], Awaitable[None] | None]


class RoomConnectError(DuplexError):
    """The room could not be joined (bad URL or token, server unreachable)."""


class RoomTransport(Transport):
    """One agent in one LiveKit room, talking with one participant at a time.

    Connection: ``url`` + ``token``, or a token minted for ``room_name`` /
    ``identity`` from ``credentials`` (default: LIVEKIT_URL, LIVEKIT_API_KEY,
    LIVEKIT_API_SECRET); or an already connected ``room`` (a worker job's).
    Who to follow: ``participant_identity`` and/or ``participant_kinds``
    (``"standard,sip"``). ``input_rate``/``output_rate`` should be the backend's,
    so audio is converted once. ``output_buffer_ms`` bounds how much voice is
    queued ahead of the listener: less stops an interruption sooner.
    """

    def __init__(
        self,
        *,
        room_name: str | None = None,
        url: str | None = None,
        token: str | None = None,
        credentials: LiveKitCredentials | None = None,
        identity: str = "agent",
        name: str | None = None,
        participant_identity: str | None = None,
        participant_kinds: str | Sequence[Kind] | None = None,
        input_rate: int = 24000,
        output_rate: int = 24000,
        output_buffer_ms: float = 200.0,
        close_on_participant_leave: bool = True,
        room: rtc.Room | None = None,
        room_options: rtc.RoomOptions | None = None,
    ) -> None:
        super().__init__()
        self.room_name = room_name
        self._url = url
        self._token = token
        self._credentials = credentials
        self.identity = identity
        self.display_name = name
        kinds = (
            parse_kinds(participant_kinds)
            if isinstance(participant_kinds, str)
            else participant_kinds
        )
        self.tracker = ParticipantTracker(
            ParticipantFilter(participant_identity, kinds)
            if kinds
            else ParticipantFilter(participant_identity)
        )
        self.close_on_participant_leave = close_on_participant_leave
        self.audio_input: RoomAudioInput = RoomAudioInput(input_rate)
        self.audio_output: RoomAudioOutput = RoomAudioOutput(
            output_rate, buffer_ms=output_buffer_ms
        )
        self.dtmf = DtmfBuffer()
        self._room = room
        self._room_options = room_options or rtc.RoomOptions(auto_subscribe=True)
        self._owns_connection = False
        self._publication: rtc.LocalTrackPublication | None = None
        self._text: RoomTextPublisher | None = None
        self._chat: ChatInput | None = None
        self._dtmf_callbacks: list[DtmfCallback] = []
        self._participant_callbacks: list[ParticipantCallback] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._participant_changed = asyncio.Event()
        self._handlers: list[tuple[str, Callable[..., None]]] = []
        self.reconnecting = False
        self.reconnects = 0
        self.close_reason: str | None = None
        self._closing = False

    # public state -------------------------------------------------------------------------
    @property
    def room(self) -> rtc.Room:
        if self._room is None:
            raise ConfigurationError("the transport has not started yet")
        return self._room

    @property
    def participant(self) -> rtc.RemoteParticipant | None:
        """The participant the agent listens to now."""
        return self.tracker.current

    @property
    def sip_call(self) -> SipCallInfo | None:
        """Phone details when the followed participant is a SIP caller."""
        p = self.tracker.current
        return SipCallInfo.from_participant(p) if p is not None else None

    @property
    def agent_track_sid(self) -> str | None:
        # the SDK updates the publication in place when it re-publishes after a reconnect
        return self._publication.sid if self._publication is not None else None

    def on_dtmf(self, callback: DtmfCallback) -> None:
        """Call ``callback(DtmfDigit)`` for every key the followed caller presses."""
        self._dtmf_callbacks.append(callback)

    def on_participant_changed(self, callback: ParticipantCallback) -> None:
        """Call ``callback(participant or None)`` whenever the followed participant changes."""
        self._participant_callbacks.append(callback)

    async def wait_for_participant(self, timeout: float | None = None) -> rtc.RemoteParticipant:
        async def wait() -> rtc.RemoteParticipant:
            while self.tracker.current is None:
                self._participant_changed.clear()
                await self._participant_changed.wait()
            return self.tracker.current

        return await asyncio.wait_for(wait(), timeout)

    # Transport ----------------------------------------------------------------------------
    async def start(self) -> None:
        if self._room is None:
            self._room = rtc.Room()
        room = self._room
        self._listen(room)
        if not room.isconnected():
            await self._connect(room)
            self._owns_connection = True
        self._text = RoomTextPublisher(
            room,
            agent_track_sid=lambda: self.agent_track_sid,
            user_track_sid=lambda: self.audio_input.track_sid,
            user_identity=lambda: self.participant.identity if self.participant else None,
        )
        self._text.start()
        self._chat = ChatInput(room, self._on_chat)
        self._chat.register()
        self._publication = await room.local_participant.publish_track(
            self.audio_output.track,
            rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE),
        )
        logger.info(
            "joined room %s as %s; agent track %s",
            room.name,
            room.local_participant.identity,
            self._publication.sid,
        )
        self._follow_best()

    def publish(self, event: object) -> None:
        if self._text is not None:
            self._text.submit(event)

    async def wait_for_playout(self) -> None:
        """Until the agent's queued voice has been played (e.g. before hanging up)."""
        await self.audio_output.wait_drained()

    async def flush_text(self) -> None:
        """Until every transcript and state change submitted so far has been sent."""
        if self._text is not None:
            await self._text.flushed()

    async def hang_up(self, identity: str | None = None) -> None:
        """End the call of ``identity`` (default: the followed participant)."""
        target = identity or (self.participant.identity if self.participant else None)
        if target is None:
            raise ConfigurationError("nobody to hang up on")
        await self._sip_controls().hang_up(self.room.name, target)

    async def transfer(
        self, identity: str, transfer_to: str, *, play_dialtone: bool = False
    ) -> None:
        await self._sip_controls().transfer(
            self.room.name, identity, transfer_to, play_dialtone=play_dialtone
        )

    async def aclose(self) -> None:
        if self._closing:
            await self.closed.wait()
            return
        self._closing = True
        self.close_reason = self.close_reason or "closed"
        room = self._room
        if room is not None:
            for event, handler in self._handlers:
                room.off(event, handler)  # type: ignore[arg-type]
        self._handlers.clear()
        self.audio_input.close()
        if self._chat is not None:
            await self._chat.aclose()
        if self._text is not None:
            await self._text.aclose()
        await self.audio_output.aclose()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        if room is not None and self._owns_connection and room.isconnected():
            with contextlib.suppress(Exception):
                await room.disconnect()
        self._participant_changed.set()
        await super().aclose()

    # connection -----------------------------------------------------------------------------
    async def _connect(self, room: rtc.Room) -> None:
        url, token = self._url, self._token
        if not url or not token:
            creds = self._credentials or LiveKitCredentials.from_env(url=url)
            url = url or creds.url
            if not token:
                if not self.room_name:
                    raise ConfigurationError("a room name (or a token for one) is needed")
                token = creds.token(
                    room=self.room_name, identity=self.identity, name=self.display_name
                )
        try:
            await room.connect(url, token, self._room_options)
        except rtc.ConnectError as e:
            raise RoomConnectError(f"could not join the room at {url}: {e}") from e

    def _sip_controls(self) -> SipControls:
        creds = self._credentials
        if creds is None:
            with contextlib.suppress(ConfigurationError):
                creds = LiveKitCredentials.from_env(url=self._url)
        return SipControls(creds.api if creds is not None and creds.has_keys else None)

    # room events ----------------------------------------------------------------------------
    def _listen(self, room: rtc.Room) -> None:
        handlers: dict[str, Callable[..., None]] = {
            "participant_connected": self._on_participant_connected,
            "participant_disconnected": self._on_participant_disconnected,
            "track_subscribed": self._on_track_subscribed,
            "track_unsubscribed": self._on_track_unsubscribed,
            "participant_attributes_changed": self._on_attributes_changed,
            "sip_dtmf_received": self._on_dtmf,
            "reconnecting": self._on_reconnecting,
            "reconnected": self._on_reconnected,
            "disconnected": self._on_disconnected,
        }
        for event, handler in handlers.items():
            room.on(event, handler)  # type: ignore[arg-type]
            self._handlers.append((event, handler))

    def _on_participant_connected(self, participant: rtc.RemoteParticipant) -> None:
        if self.tracker.current is None:
            self._follow_best()

    def _on_participant_disconnected(self, participant: rtc.RemoteParticipant) -> None:
        if not self.tracker.left(participant):
            return
        logger.info("followed participant %s left", participant.identity)
        self.audio_input.detach()
        self.dtmf.clear()
        self._follow_best()
        if self.tracker.current is None and self.close_on_participant_leave:
            self.close_reason = f"participant {participant.identity} left"
            self._spawn(self.aclose())

    def _on_track_subscribed(
        self,
        track: rtc.Track,
        publication: rtc.RemoteTrackPublication,
        participant: rtc.RemoteParticipant,
    ) -> None:
        if participant is self.tracker.current and _is_voice(publication):
            self._attach(participant)

    def _on_track_unsubscribed(
        self,
        track: rtc.Track | None,
        publication: rtc.RemoteTrackPublication,
        participant: rtc.RemoteParticipant,
    ) -> None:
        if participant is self.tracker.current and publication.sid == self.audio_input.track_sid:
            self.audio_input.detach()
            self._attach(participant)  # another audio track of the same participant, if any

    def _on_attributes_changed(self, changed: dict[str, str], participant: rtc.Participant) -> None:
        if participant is self.tracker.current and changed.get("sip.callStatus") == "hangup":
            logger.info("phone call of %s hung up", participant.identity)

    def _on_dtmf(self, event: rtc.SipDTMF) -> None:
        current = self.tracker.current
        if event.participant is not None and (
            current is None or event.participant.identity != current.identity
        ):
            return  # keys from a caller we are not talking to
        digit = dtmf_from_event(event)
        self.dtmf.push(digit)
        for cb in list(self._dtmf_callbacks):
            self._spawn(run_callback(cb, digit))

    def _on_reconnecting(self) -> None:
        self.reconnecting = True
        logger.warning("connection to the room lost; the SDK is reconnecting")

    def _on_reconnected(self) -> None:
        self.reconnecting = False
        self.reconnects += 1
        logger.info("reconnected to the room")
        self._follow_best()
        if self._text is not None:
            self._spawn(self._text.republish_state())

    def _on_disconnected(self, reason: Any = None) -> None:
        self.close_reason = f"disconnected from the room ({_reason_name(reason)})"
        self._spawn(self.aclose())

    # following ------------------------------------------------------------------------------
    def _follow_best(self) -> None:
        if self._room is None or self._closing:
            return
        before = self.tracker.current
        chosen = self.tracker.pick(self._room.remote_participants.values())
        if chosen is not before:
            if chosen is not None:
                logger.info("following %s (%s)", chosen.identity, _kind(chosen))
            self._participant_changed.set()
            for cb in list(self._participant_callbacks):
                self._spawn(_maybe_await(cb(chosen)))
        if chosen is not None and (chosen is not before or self.audio_input.track_sid is None):
            self._attach(chosen)

    def _attach(self, participant: rtc.RemoteParticipant) -> None:
        pubs = [p for p in participant.track_publications.values() if _is_voice(p) and p.track]
        pubs.sort(key=lambda p: p.source != rtc.TrackSource.SOURCE_MICROPHONE)
        if not pubs:
            return
        track = pubs[0].track
        assert track is not None
        if self.audio_input.track_sid != track.sid:
            logger.info("listening to %s's track %s", participant.identity, track.sid)
            self.audio_input.attach(track)

    async def _on_chat(self, text: str, identity: str) -> None:
        current = self.tracker.current
        if current is not None and identity != current.identity:
            logger.debug("ignoring chat from %s (not the followed participant)", identity)
            return
        await self.deliver_text(text)

    def _spawn(self, aw: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(aw)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("room transport task failed", exc_info=task.exception())


def _is_voice(pub: rtc.TrackPublication) -> bool:
    return pub.kind == rtc.TrackKind.KIND_AUDIO and pub.source in (
        rtc.TrackSource.SOURCE_MICROPHONE,
        rtc.TrackSource.SOURCE_UNKNOWN,
    )


def _kind(p: rtc.Participant) -> str:
    return kind_name(p.kind)


def _reason_name(reason: Any) -> str:
    try:
        return str(rtc.DisconnectReason.Name(reason))
    except Exception:
        return str(reason)


async def _maybe_await(result: Awaitable[None] | None) -> None:
    if result is not None:
        await result
