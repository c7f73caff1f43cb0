"""The fuzz suites reuse the cascade's real models (loaded once per run)."""

from tests.cascade.conftest import piper, transcriber, whisper_stt

__all__ = ["piper", "transcriber", "whisper_stt"]
