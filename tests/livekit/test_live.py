"""Against a real LiveKit server (``livekit-server --dev`` or LiveKit Cloud).

Runs only when LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET are set::

    LIVEKIT_URL=ws://127.0.0.1:7880 LIVEKIT_API_KEY=devkey LIVEKIT_API_SECRET=secret \\
        .venv/bin/python -m pytest tests/livekit/test_live.py -m livekit_live

A second participant joins the same room, publishes generated speech and
checks that the agent answers: its voice on its track, a final transcript on
``lk.transcription`` and its state in ``lk.agent.state``.
"""

from __future__ import annotations

import asyncio
import os
import uuid

import numpy as np
import pytest
from livekit import rtc

from duplex.agents import Agent, AgentSession, EnergyVAD, TurnOptions
from duplex.agents.testing import Reply, ScriptedBackend
from duplex.plugins.livekit import LiveKitCredentials, RoomTransport

from .conftest import tone

pytestmark = [
    pytest.mark.livekit_live,
    pytest.mark.skipif(
        not all(
            os.environ.get(v) for v in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")
        ),
        reason="needs a LiveKit server: set LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET",
    ),
]


def _caller_speech():
    from tests.speech import espeak_available, speak

    if espeak_available():
        return speak("Hello, is anybody there?", 48000)
    return tone(300, 800, 48000)


async def test_agent_answers_a_participant_in_a_real_room() -> None:
    creds = LiveKitCredentials.from_env()
    room_name = f"duplex-live-{uuid.uuid4().hex[:8]}"
    backend = ScriptedBackend([Reply(text="Yes, I am here.", audio_ms=800)])
    transport = RoomTransport(room_name=room_name, credentials=creds, identity="duplex-agent")
    session = AgentSession(
        agent=Agent(instructions="answer"),
        backend=backend,
        vad=EnergyVAD(),
        turn=TurnOptions(silence_duration_ms=300, min_speech_ms=100),
    )
    await asyncio.wait_for(session.start(transport), 20)

    caller = rtc.Room()
    transcripts: asyncio.Queue[tuple[dict[str, str], str]] = asyncio.Queue()
    readers: set[asyncio.Task[None]] = set()

    def on_transcript(reader: rtc.TextStreamReader, identity: str) -> None:
        async def read() -> None:
            text = await reader.read_all()
            transcripts.put_nowait((dict(reader.info.attributes or {}), text))

        task = asyncio.ensure_future(read())
        readers.add(task)
        task.add_done_callback(readers.discard)

    agent_track: asyncio.Future[rtc.Track] = asyncio.get_running_loop().create_future()

    @caller.on("track_subscribed")
    def _on_track(track: rtc.Track, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant):
        if p.identity == "duplex-agent" and not agent_track.done():
            agent_track.set_result(track)

    caller.register_text_stream_handler("lk.transcription", on_transcript)
    token = creds.token(room=room_name, identity="caller", kind="standard")
    try:
        await asyncio.wait_for(caller.connect(creds.url, token), 20)
        source = rtc.AudioSource(48000, 1)
        mic = rtc.LocalAudioTrack.create_audio_track("mic", source)
        await caller.local_participant.publish_track(
            mic, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        )
        await asyncio.wait_for(transport.wait_for_participant(), 20)
        track = await asyncio.wait_for(agent_track, 20)
        stream = rtc.AudioStream.from_track(track=track, sample_rate=24000, num_channels=1)

        speech = _caller_speech()
        silence = np.zeros(48000, dtype=np.int16)
        for chunk in (speech.data[:, 0], silence):
            for i in range(0, len(chunk), 480):
                part = chunk[i : i + 480]
                await source.capture_frame(rtc.AudioFrame(part.tobytes(), 48000, 1, len(part)))

        loud_ms = 0.0

        async def listen() -> None:
            nonlocal loud_ms
            async for ev in stream:
                x = np.frombuffer(ev.frame.data, dtype=np.int16).astype(np.float32) / 32768
                if float(np.sqrt(np.mean(x * x))) > 0.05:
                    loud_ms += 1000 * ev.frame.samples_per_channel / ev.frame.sample_rate
                    if loud_ms >= 500:
                        return

        await asyncio.wait_for(listen(), 30)
        assert loud_ms >= 500  # the caller heard the agent's answer
        while True:
            attrs, text = await asyncio.wait_for(transcripts.get(), 20)
            if attrs.get("lk.transcription_final") == "true" and text == "Yes, I am here.":
                break
        agent_p = caller.remote_participants["duplex-agent"]
        assert agent_p.attributes.get("lk.agent.state") in {"speaking", "listening"}
        await stream.aclose()
    finally:
        await session.aclose()
        await caller.disconnect()
