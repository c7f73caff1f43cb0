"""A LiveKit room up to the server boundary, for tests.

`SimulatedRoom` is a real ``rtc.Room``: events reach it the way the native SDK
delivers them (protobuf ``FfiEvent``s through the SDK's FFI queue, processed by
the room's own listen task), so participants, publications, tracks and DTMF
events are the SDK's own objects. Only the calls that would go to a server are
answered here: ``connect`` (the token is checked with ``api.TokenVerifier``),
``disconnect``, and the local participant's publish / attribute / text-stream
requests, which are recorded.

A remote participant's microphone is a real native track: a ``LocalAudioTrack``
fed by an ``AudioSource`` whose native handle is handed to the SDK in the
``track_subscribed`` event, so the transport's ``AudioStream`` receives the
audio through the native pipeline. What the agent publishes is read back with
``AudioStream.from_track`` on its real ``LocalAudioTrack``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from livekit import api, rtc
from livekit.rtc._ffi_client import FfiClient, FfiHandle
from livekit.rtc._proto import data_stream_pb2 as ds
from livekit.rtc._proto import ffi_pb2, handle_pb2
from livekit.rtc._proto import participant_pb2 as pp
from livekit.rtc._proto import room_pb2 as rp
from livekit.rtc._proto import track_pb2 as tp

from duplex.agents.audio import AudioFrame

API_KEY = "devkey"
API_SECRET = "secret-for-tests-only-0123456789abcdef"
_handles = itertools.count(1 << 60)
_sids = itertools.count(1)


def _sid(prefix: str) -> str:
    return f"{prefix}_{next(_sids):06d}"


@dataclass
class SentStream:
    """One text stream the agent opened (what a client would receive)."""

    topic: str
    attributes: dict[str, str]
    sender_identity: str | None
    chunks: list[str] = field(default_factory=list)
    closed: bool = False
    close_attributes: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    @property
    def final_attributes(self) -> dict[str, str]:
        """Attributes as a reader sees them at the end (trailer merged over header)."""
        return {**self.attributes, **self.close_attributes}


class RecordingWriter:
    def __init__(self, stream: SentStream, changed: asyncio.Event) -> None:
        self.stream = stream
        self._changed = changed

    async def write(self, text: str) -> None:
        assert not self.stream.closed, "write after close"
        self.stream.chunks.append(text)
        self._changed.set()

    async def aclose(self, *, reason: str = "", attributes: dict[str, str] | None = None) -> None:
        self.stream.closed = True
        self.stream.close_attributes = dict(attributes or {})
        self._changed.set()


class SimulatedLocalParticipant(rtc.LocalParticipant):
    """The agent's own participant: requests that need a server are recorded."""

    def __init__(self, room: SimulatedRoom, owned: pp.OwnedParticipant) -> None:
        super().__init__(room._room_queue, owned)
        self._sim_room = room
        self.streams: list[SentStream] = []
        self.attribute_updates: list[dict[str, str]] = []
        self.changed = asyncio.Event()

    async def publish_track(
        self, track: rtc.LocalTrack, options: rtc.TrackPublishOptions = rtc.TrackPublishOptions()
    ) -> rtc.LocalTrackPublication:
        info = tp.TrackPublicationInfo(
            sid=_sid("TR"),
            name=track.name,
            kind=track.kind,
            source=options.source,
            remote=False,
        )
        pub = rtc.LocalTrackPublication(tp.OwnedTrackPublication(info=info))
        pub._track = track
        track._info.sid = pub.sid
        self._track_publications[pub.sid] = pub
        self._sim_room.track_published.set()
        return pub

    async def unpublish_track(self, track_sid: str) -> None:
        self._track_publications.pop(track_sid, None)

    async def set_attributes(self, attributes: dict[str, str]) -> None:
        self.attribute_updates.append(dict(attributes))
        self._info.attributes.update(attributes)
        self.changed.set()

    async def stream_text(self, **kwargs: Any) -> RecordingWriter:  # type: ignore[override]
        stream = SentStream(
            topic=kwargs.get("topic", ""),
            attributes=dict(kwargs.get("attributes") or {}),
            sender_identity=kwargs.get("sender_identity") or self.identity,
        )
        self.streams.append(stream)
        self.changed.set()
        return RecordingWriter(stream, self.changed)

    def transcriptions(self) -> list[SentStream]:
        return [s for s in self.streams if s.topic == "lk.transcription"]


class SimulatedRoom(rtc.Room):
    def __init__(
        self, *, name: str = "test-room", api_key: str = API_KEY, api_secret: str = API_SECRET
    ) -> None:
        super().__init__()
        self._sim_name = name
        self._verifier = api.TokenVerifier(api_key, api_secret)
        self.claims: api.access_token.Claims | None = None
        self.connected_url: str | None = None
        self.disconnect_calls = 0
        self._mics: dict[str, SimulatedMic] = {}
        #: Set when the agent has published a track (it is fully in the room).
        self.track_published = asyncio.Event()

    # the two calls that would reach the server ---------------------------------------------
    async def connect(
        self, url: str, token: str, options: rtc.RoomOptions = rtc.RoomOptions()
    ) -> None:
        try:
            claims = self._verifier.verify(token)
        except Exception as e:
            raise rtc.ConnectError(f"token rejected: {e}") from e
        video = claims.video
        if video is None or not video.room_join or video.room != self._sim_name:
            raise rtc.ConnectError("token does not grant joining this room")
        self.claims = claims
        self.connected_url = url
        handle = FfiHandle(next(_handles))
        handle.mark_consumed()  # nothing native to release
        self._ffi_handle = handle
        self._info = rp.RoomInfo(sid=_sid("RM"), name=self._sim_name)
        self._resolve_first_sid(self._info.sid)
        self._connection_state = rtc.ConnectionState.CONN_CONNECTED
        kind = pp.PARTICIPANT_KIND_AGENT if claims.kind == "agent" else pp.PARTICIPANT_KIND_STANDARD
        owned = pp.OwnedParticipant(
            info=pp.ParticipantInfo(
                sid=_sid("PA"), identity=claims.identity, name=claims.name or "", kind=kind
            )
        )
        self._local_participant = SimulatedLocalParticipant(self, owned)
        self._ffi_queue = FfiClient.instance.queue.subscribe(
            self._loop,
            filter_fn=lambda e: (
                e.WhichOneof("message") not in ("audio_stream_event", "video_stream_event")
            ),
        )
        self._task = self._loop.create_task(self._listen_task())

    async def disconnect(self, *, reason: int = rtc.DisconnectReason.CLIENT_INITIATED) -> None:
        self.disconnect_calls += 1
        if not self.isconnected():
            return
        await self._end(reason)

    async def _end(self, reason: int) -> None:
        self._connection_state = rtc.ConnectionState.CONN_DISCONNECTED
        FfiClient.instance.queue.put(
            ffi_pb2.FfiEvent(room_event=rp.RoomEvent(room_handle=self._handle, eos=rp.RoomEOS()))
        )
        await self._task
        FfiClient.instance.queue.unsubscribe(self._ffi_queue)
        self.emit("disconnected", reason)
        for mic in self._mics.values():
            await mic.aclose()

    # driving it from the "server" side ----------------------------------------------------
    @property
    def local(self) -> SimulatedLocalParticipant:
        lp = self.local_participant
        assert isinstance(lp, SimulatedLocalParticipant)
        return lp

    @property
    def _handle(self) -> int:
        assert self._ffi_handle is not None
        return self._ffi_handle.handle

    async def send(self, **event: Any) -> None:
        """Deliver one room event through the SDK's FFI queue; return once the room handled it."""
        ev = ffi_pb2.FfiEvent(room_event=rp.RoomEvent(room_handle=self._handle, **event))
        seen = self._room_queue.subscribe()
        try:
            FfiClient.instance.queue.put(ev)
            await asyncio.wait_for(seen.wait_for(lambda e: e is ev), 5)
            seen.task_done()
        finally:
            self._room_queue.unsubscribe(seen)

    async def join(
        self,
        identity: str,
        *,
        kind: int = pp.PARTICIPANT_KIND_STANDARD,
        attributes: dict[str, str] | None = None,
    ) -> rtc.RemoteParticipant:
        info = pp.ParticipantInfo(
            sid=_sid("PA"),
            identity=identity,
            kind=kind,
            attributes=attributes or {},
            state=pp.PARTICIPANT_STATE_ACTIVE,
        )
        await self.send(
            participant_connected=rp.ParticipantConnected(info=pp.OwnedParticipant(info=info))
        )
        return self.remote_participants[identity]

    async def leave(
        self, identity: str, reason: int = rtc.DisconnectReason.CLIENT_INITIATED
    ) -> None:
        mic = self._mics.pop(identity, None)
        await self.send(
            participant_disconnected=rp.ParticipantDisconnected(
                participant_identity=identity, disconnect_reason=reason
            )
        )
        if mic is not None:
            await mic.aclose()

    async def publish_mic(
        self, identity: str, *, sample_rate: int = 48000, source: int = tp.SOURCE_MICROPHONE
    ) -> SimulatedMic:
        """The participant publishes a microphone and the agent is subscribed to it."""
        mic = SimulatedMic(sample_rate)
        sid = _sid("TR")
        await self.send(
            track_published=rp.TrackPublished(
                participant_identity=identity,
                publication=tp.OwnedTrackPublication(
                    info=tp.TrackPublicationInfo(
                        sid=sid, name="microphone", kind=tp.KIND_AUDIO, source=source, remote=True
                    )
                ),
            )
        )
        handle = mic.give_handle()
        await self.send(
            track_subscribed=rp.TrackSubscribed(
                participant_identity=identity,
                track=tp.OwnedTrack(
                    handle=handle_pb2.FfiOwnedHandle(id=handle),
                    info=tp.TrackInfo(sid=sid, name="microphone", kind=tp.KIND_AUDIO, remote=True),
                ),
            )
        )
        mic.sid = sid
        self._mics[identity] = mic
        return mic

    async def unpublish_mic(self, identity: str) -> None:
        mic = self._mics.pop(identity)
        await self.send(
            track_unsubscribed=rp.TrackUnsubscribed(
                participant_identity=identity, track_sid=mic.sid
            )
        )
        await self.send(
            track_unpublished=rp.TrackUnpublished(
                participant_identity=identity, publication_sid=mic.sid
            )
        )
        await mic.aclose()

    async def press(self, identity: str, digit: str) -> None:
        code = {"*": 10, "#": 11}.get(digit, int(digit) if digit.isdigit() else 0)
        await self.send(
            data_packet_received=rp.DataPacketReceived(
                participant_identity=identity,
                kind=rp.KIND_RELIABLE,
                sip_dtmf=rp.SipDTMF(code=code, digit=digit),
            )
        )

    async def set_remote_attributes(self, identity: str, attributes: dict[str, str]) -> None:
        entries = [rp.AttributesEntry(key=k, value=v) for k, v in attributes.items()]
        p = self.remote_participants[identity]
        merged = {**p.attributes, **attributes}
        await self.send(
            participant_attributes_changed=rp.ParticipantAttributesChanged(
                participant_identity=identity,
                attributes=[rp.AttributesEntry(key=k, value=v) for k, v in merged.items()],
                changed_attributes=entries,
            )
        )

    async def reconnect(self) -> None:
        await self.send(reconnecting=rp.Reconnecting())
        await self.send(reconnected=rp.Reconnected())

    async def server_disconnect(self, reason: int = rtc.DisconnectReason.ROOM_DELETED) -> None:
        """The server ends our session (room deleted, agent kicked)."""
        await self.send(disconnected=rp.Disconnected(reason=reason))

    async def chat(self, identity: str, text: str) -> None:
        """A chat message on lk.chat, through the handler the room registered for the topic.

        A native stream reader cannot exist without a server, so the reader here is a
        stand-in with the reader's interface.
        """
        handler = self._text_stream_handlers["lk.chat"]
        handler(_TextReader(text, "lk.chat"), identity)  # type: ignore[arg-type]

    async def agent_audio(self, sample_rate: int = 24000) -> AsyncIterator[AudioFrame]:
        """What a subscriber of the agent's published track hears."""
        pubs = [p for p in self.local.track_publications.values() if p.track is not None]
        assert pubs, "the agent has not published a track"
        stream = rtc.AudioStream.from_track(
            track=pubs[0].track, sample_rate=sample_rate, num_channels=1
        )
        try:
            async for ev in stream:
                data = np.frombuffer(ev.frame.data, dtype=np.int16).copy()
                yield AudioFrame(data, ev.frame.sample_rate)
        finally:
            await stream.aclose()


class _TextReader:
    def __init__(self, text: str, topic: str) -> None:
        self._text = text
        self.info = ds.TextStreamInfo(stream_id=_sid("ST"), topic=topic)

    async def read_all(self) -> str:
        return self._text


class SimulatedMic:
    """A caller's microphone: frames captured here reach the room's remote audio track."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.source = rtc.AudioSource(sample_rate, 1, queue_size_ms=10_000)
        self._track = rtc.LocalAudioTrack.create_audio_track("microphone", self.source)
        self.sid = ""

    def give_handle(self) -> int:
        """Hand the native track to the room (the SDK's RemoteAudioTrack will own it)."""
        handle = self._track._ffi_handle
        handle.mark_consumed()
        return handle.handle

    async def say(self, frame: AudioFrame) -> None:
        mono = frame.to_mono()
        assert mono.sample_rate == self.sample_rate
        for start in range(0, len(mono), self.sample_rate // 100):
            part = mono.slice(start, start + self.sample_rate // 100)
            await self.source.capture_frame(
                rtc.AudioFrame(part.to_pcm16(), self.sample_rate, 1, part.samples_per_channel)
            )

    async def aclose(self) -> None:
        self.source.clear_queue()
        await self.source.aclose()
