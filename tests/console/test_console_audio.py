"""The console against virtual sound devices (a private PulseAudio with null sinks).

Speech is played into the virtual microphone with ``paplay``; what the agent says
is recorded from the virtual speaker's monitor with ``parec`` and checked.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from duplex.agents import Agent, AgentSession, EnergyVAD, TurnOptions
from duplex.agents.audio import AudioFrame
from duplex.agents.testing import Reply, ScriptedBackend
from duplex.plugins.console import (
    AudioDeviceError,
    ConsoleTransport,
    list_devices,
    resolve_device,
)
from tests.speech import espeak_available, speak

from .pulse import Pulse

TURN = TurnOptions(threshold=0.5, prefix_padding_ms=100, silence_duration_ms=300, min_speech_ms=100)


def test_devices_are_listed_and_chosen_by_name(pulse: Pulse) -> None:
    devices = list_devices()
    names = [d.name for d in devices]
    assert "pulse" in names
    index = resolve_device("PULSE", kind="input")
    assert index is not None and devices[[d.index for d in devices].index(index)].name == "pulse"
    assert resolve_device(None, kind="output") is None  # the default device
    with pytest.raises(AudioDeviceError, match="no input device matches 'usb headset'"):
        resolve_device("usb headset", kind="input")
    with pytest.raises(AudioDeviceError, match="999"):
        resolve_device(999, kind="output")


@pytest.mark.skipif(not espeak_available(), reason="needs espeak-ng")
async def test_speech_in_the_mic_is_answered_on_the_speaker(pulse: Pulse, tmp_path: Path) -> None:
    answer = speak("The weather is sunny today.", 24000)
    backend = ScriptedBackend(
        [Reply(text="The weather is sunny today.", audio=answer)],
        user_transcripts=["what is the weather"],
    )
    transport = ConsoleTransport(sample_rate=48000, echo_cancellation=True)
    session = AgentSession(agent=Agent(), backend=backend, vad=EnergyVAD(), turn=TURN)
    await session.start(transport)
    recorder = await pulse.record_speaker(16000)
    question = speak("What is the weather like?", 48000)
    player = pulse.play_into_mic(
        AudioFrame.concat([question, AudioFrame.silence(0.6, 48000)]), tmp_path / "q.wav"
    )
    commit = await backend.session.wait_for_call("commit_audio", timeout=10)
    await backend.session.wait_for_call("create_response", timeout=5)
    # the question reached the session: about its length of speech was sent to the backend
    sent_ms = 1000 * commit.args["samples"] / backend.capabilities.input_sample_rate
    assert sent_ms >= question.duration_ms * 0.8
    recorded = await asyncio.wait_for(recorder.until_sound_then_quiet(), 15)
    await recorder.stop()
    player.wait(5)
    await session.aclose()

    loud = [recorded.slice(i, i + 160) for i in range(0, len(recorded), 160)]
    loud_ms = 10 * sum(1 for f in loud if f.rms() > 0.02)
    assert loud_ms >= answer.duration_ms * 0.5  # the answer came out of the speaker
    from duplex.plugins.whisper import load_whisper, transcribe

    words = await asyncio.to_thread(transcribe, load_whisper(), recorded.to_float()[:, 0])
    # On a loaded machine late audio callbacks blur words (seen: "sunny" heard as "sorry"
    # while a 100-session benchmark ran); the level check above already proved the answer
    # played, so here one of its words must survive.
    heard = [w for w in ("weather", "sunny", "today") if w in words.lower()]
    assert heard, words


async def _mic_level_while_playing(pulse: Pulse, *, echo_cancellation: bool) -> float:
    """RMS of the microphone while the agent talks, after the canceller's first second."""
    transport = ConsoleTransport(sample_rate=48000, echo_cancellation=echo_cancellation)
    await transport.start()
    levels: list[float] = []
    playing = False

    async def listen() -> None:
        async for f in transport.audio_input.frames():
            if playing:
                levels.append(f.rms())

    listener = asyncio.ensure_future(listen())
    # broadband speech: pure tones are a poor test of an echo canceller
    voice = speak(
        "The weather today is sunny with a light breeze from the west, "
        "and tomorrow it will rain a little in the morning.",
        48000,
    )
    playing = True
    for start in range(0, len(voice), 960):
        await transport.audio_output.write(voice.slice(start, start + 960))
    playing = False  # the writes keep pace with the speaker: we are near the end of the voice
    assert transport.device is not None
    await transport.aclose()
    await listener
    # from 1 s in (the canceller has adapted, as in a real call), per 100 ms; the median
    # keeps one scheduling hiccup of a loaded machine from deciding the result
    window = np.array(levels[100:])
    blocks = [np.sqrt(np.mean(np.square(window[i : i + 10]))) for i in range(0, len(window), 10)]
    return float(np.median(blocks))


@pytest.mark.skipif(not espeak_available(), reason="needs espeak-ng")
async def test_echo_cancellation_removes_the_agents_voice_from_the_mic(pulse: Pulse) -> None:
    pulse.add_echo_path()  # whatever the speaker plays comes back into the microphone
    raw = await _mic_level_while_playing(pulse, echo_cancellation=False)
    cleaned = await _mic_level_while_playing(pulse, echo_cancellation=True)
    assert raw > 0.05  # the echo path is real: without cancellation the mic hears the agent
    assert cleaned < raw / 10, (raw, cleaned)  # at least 20 dB of echo removed
