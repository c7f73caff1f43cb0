"""Models for the turn-taking tests, loaded once per run."""

from __future__ import annotations

import pytest

from duplex.plugins.piper import PiperTTS


@pytest.fixture(scope="session")
def piper() -> PiperTTS:
    return PiperTTS(noise_scale=0.0, noise_w_scale=0.0)  # repeatable speech
