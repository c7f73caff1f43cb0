"""Offline text-to-speech: piper-tts with the en_US-joe-medium voice shipped in a wheel."""

from __future__ import annotations

from .tts import PiperTTS, default_voice, load_voice

__all__ = ["PiperTTS", "default_voice", "load_voice"]
