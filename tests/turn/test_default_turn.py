"""Commands give sessions Smart Turn where its model is installed, else the silence rule."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soxr

from duplex.agents.app import AppSpec, default_turn, load_app
from duplex.agents.audio import AudioFrame
from duplex.agents.backend import Backend
from duplex.agents.testing import MemoryTransport, Reply, ScriptedBackend
from duplex.plugins.piper import PiperTTS
from duplex.plugins.smart_turn import (
    MODEL_ENV,
    SmartTurn,
    SmartTurnText,
    bundled_model_path,
    shared_queue,
    shared_text_queue,
)
from duplex.plugins.telephony.cli import phone_session_options

from .utterances import synth

Options = Callable[[AppSpec, Backend], dict[str, Any]]

pytestmark = pytest.mark.skipif(bundled_model_path() is None, reason="needs pipecat-ai")

APP = """
from duplex.agents import Agent

class Helper(Agent):
    instructions = "helpful"
"""


async def commit_ms(
    app: Path, speech: np.ndarray, rate: int | None = None, options: Options | None = None
) -> tuple[float, object]:
    """Audio (ms) the command's default session had taken in when it committed the turn.

    ``options`` builds the session options as a command does (none: `agent dev`'s way).
    """
    spec = load_app(str(app))
    backend = ScriptedBackend([Reply(text="Sure", audio_ms=200)], server_vad=False)
    rate = rate or piper_rate()
    transport = MemoryTransport(input_rate=rate, playout="auto")
    session = await spec.start(transport, backend, **(options(spec, backend) if options else {}))
    try:
        transport.push_silence(400)
        served, text_served = shared_queue().served, shared_text_queue().served
        transport.push(AudioFrame(speech, rate))
        transport.push_silence(300)
        if session.turn.end_of_turn is not None:
            # Audio arrives faster than real time here: hold the rest of the pause until
            # the model has answered, as a live call's 20 ms frames would wait for it.
            await wait_until(lambda: shared_queue().served > served)
        if isinstance(session.turn.end_of_turn, SmartTurnText):
            await wait_until(lambda: shared_text_queue().served > text_served)
        transport.push_silence(2200)
        commit = await backend.session.wait_for_call("commit_audio")
        ms = 1000 * commit.args["samples"] / backend.capabilities.input_sample_rate
        return ms, session.turn.end_of_turn
    finally:
        await session.aclose()


async def wait_until(cond: Callable[[], bool], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():  # noqa: ASYNC110 - the queue's public counter is the only signal
            await asyncio.sleep(0.01)


def piper_rate() -> int:
    return 22050


@pytest.fixture
def app(tmp_path: Path) -> Path:
    path = tmp_path / "helper_app.py"
    path.write_text(textwrap.dedent(APP))
    return path


async def test_the_default_session_ends_a_finished_sentence_with_smart_turn(
    app: Path, piper: PiperTTS, monkeypatch: pytest.MonkeyPatch
) -> None:
    speech = await synth(piper, "Please turn on the kitchen lights.")
    assert piper.sample_rate == piper_rate()
    monkeypatch.delenv(MODEL_ENV, raising=False)
    with_model, eot = await commit_ms(app, speech)
    # Smart Turn alone: this backend has no local speech-to-text for the text score.
    assert type(eot) is SmartTurn
    monkeypatch.setenv(MODEL_ENV, "off")
    with_rule, none = await commit_ms(app, speech)
    assert none is None
    # Audio time, not wall time: the model's "complete" lands within the first 300 ms of
    # the pause (it is asked ~100 ms in), the silence rule needs 500 ms.
    assert with_rule - with_model >= 100


async def test_phone_calls_end_a_finished_sentence_with_smart_turn_too(
    app: Path, piper: PiperTTS, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (Narrowband audio loses a final "s" above 4 kHz: Smart Turn then hears "...light-"
    # and waits. Measured on the 20 complete sentences, 1/20 scored below 0.5 at 16 kHz
    # and 1/20 at 8 kHz, "lights" among them; this sentence scores 0.99 at both.)
    speech = await synth(piper, "Where is the nearest pharmacy?")
    line = soxr.resample(speech, piper_rate(), 8000).astype(np.int16)  # a phone line's 8 kHz
    monkeypatch.delenv(MODEL_ENV, raising=False)
    with_model, eot = await commit_ms(app, line, 8000, phone_session_options)
    assert type(eot) is SmartTurn
    monkeypatch.setenv(MODEL_ENV, "off")
    with_rule, none = await commit_ms(app, line, 8000, phone_session_options)
    assert none is None
    assert with_rule - with_model >= 100


def test_the_environment_names_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundled = bundled_model_path()
    assert bundled is not None
    copy = tmp_path / "my-turn-model.onnx"
    copy.write_bytes(bundled.read_bytes())
    monkeypatch.setenv(MODEL_ENV, str(copy))
    turn = default_turn()
    assert turn is not None and isinstance(turn.end_of_turn, SmartTurnText)
    assert turn.end_of_turn.audio_model.model_path == copy.resolve()
    monkeypatch.setenv(MODEL_ENV, str(tmp_path / "missing.onnx"))
    assert default_turn() is None  # a bad setting never stops a command from starting


@pytest.mark.parametrize(
    ("setting", "expected"), [(None, "end of turn: SmartTurn"), ("off", "ms of silence")]
)
def test_one_info_line_says_which_rule_ends_turns(setting: str | None, expected: str) -> None:
    code = (
        "import logging\n"
        "logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')\n"
        "from duplex.agents.app import default_turn\n"
        "default_turn(); default_turn()\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != MODEL_ENV}
    if setting is not None:
        env[MODEL_ENV] = setting
    err = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    ).stderr
    lines = [ln for ln in err.splitlines() if "end of turn" in ln]
    assert len(lines) == 1 and lines[0].startswith("INFO") and expected in lines[0], err


def test_a_broken_model_file_falls_back_to_the_silence_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "smart-turn-v3.2-cpu.onnx"
    broken.write_bytes(b"not an onnx model")
    monkeypatch.setenv(MODEL_ENV, str(broken))
    assert default_turn() is None
