"""`SessionRecorder`: a call on disk — the conversation as JSON, both voices as a stereo WAV.

Opt-in. Attach it before the session starts; when the call ends it writes
``<dir>/<session id>.json`` and ``<dir>/<session id>.wav`` (left: the caller as the
session received them; right: the agent *as heard*, i.e. what the transport accepted
minus what an interruption cleared, placed at the time it played). The audio is
tapped through the public `AudioInput`/`AudioOutput` interfaces, never a transport's
internals, so it works with every transport.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import soundfile as sf
import soxr

from .audio import AudioFrame
from .conversation import AudioPart, FunctionCall, FunctionCallOutput, Item, Message, TextPart
from .events import (
    AgentInterrupted,
    ConversationItemAdded,
    MetricsCollected,
    SessionClosed,
    SessionError,
    ToolExecuted,
    UserTranscribed,
)
from .transport import AudioInput, AudioOutput, Transport

if TYPE_CHECKING:
    from .session import AgentSession

__all__ = ["SessionRecorder", "item_from_json", "item_to_json"]

log = logging.getLogger(__name__)
Mono = npt.NDArray[np.int16]


def item_to_json(item: Item) -> dict[str, Any]:
    """A conversation item as plain JSON (audio bytes left out; their length and text kept)."""
    out = dataclasses.asdict(item)
    for part in out.get("content", ()):
        part.pop("pcm16", None)
    return out


def item_from_json(data: dict[str, Any]) -> Item:
    """The inverse of `item_to_json` (equal to the original item; audio bytes not restored)."""
    kind = data.get("type")
    if kind == "message":
        parts = tuple(
            TextPart(p["text"])
            if p["type"] == "text"
            else AudioPart(p["transcript"], p["duration_ms"], sample_rate=p["sample_rate"])
            for p in data["content"]
        )
        fields = {k: v for k, v in data.items() if k not in ("content", "type")}
        return Message(content=parts, **fields)
    if kind == "function_call":
        return FunctionCall(**{k: v for k, v in data.items() if k != "type"})
    if kind == "function_call_output":
        return FunctionCallOutput(**{k: v for k, v in data.items() if k != "type"})
    raise ValueError(f"unknown item type {kind!r}")


def _mono(frame: AudioFrame) -> Mono:
    data = frame.data
    if frame.channels == 1:
        return np.array(data[:, 0], dtype=np.int16)
    return np.asarray(data.mean(axis=1), dtype=np.int16)


class _Track:
    """One voice: segments of audio at positions (ms from the recording's start)."""

    def __init__(self) -> None:
        self.rate: int | None = None
        self.segments: list[tuple[float, Mono]] = []
        self.cursor_ms = 0.0

    def add(self, at_ms: float, frame: AudioFrame) -> None:
        if self.rate is None:
            self.rate = frame.sample_rate
        pcm = _mono(frame)
        if frame.sample_rate != self.rate:
            pcm = np.asarray(soxr.resample(pcm, frame.sample_rate, self.rate), dtype=np.int16)
        self.segments.append((at_ms, pcm))
        self.cursor_ms = at_ms + 1000.0 * len(pcm) / self.rate

    def drop_after(self, cut_ms: float) -> None:
        """Forget what lies past ``cut_ms`` (audio that was cleared before it played)."""
        if self.rate is None:
            return
        kept: list[tuple[float, Mono]] = []
        for at, pcm in self.segments:
            if at >= cut_ms:
                continue
            keep = round((cut_ms - at) * self.rate / 1000.0)
            kept.append((at, pcm[:keep]))
        self.segments = kept
        self.cursor_ms = min(self.cursor_ms, cut_ms)

    def render(self, rate: int, length: int) -> Mono:
        out = np.zeros(length, dtype=np.int16)
        if self.rate is None or not self.segments:
            return out
        end_ms = max(at + 1000.0 * len(p) / self.rate for at, p in self.segments)
        native = np.zeros(round(end_ms * self.rate / 1000.0) + 1, dtype=np.int16)
        for at, pcm in self.segments:
            i = round(at * self.rate / 1000.0)
            native[i : i + len(pcm)] = pcm[: max(0, len(native) - i)]
        if self.rate != rate:
            native = np.asarray(soxr.resample(native, self.rate, rate), dtype=np.int16)
        n = min(length, len(native))
        out[:n] = native[:n]
        return out


class _TapInput(AudioInput):
    """Passes the caller's frames through, noting each at its arrival."""

    def __init__(self, inner: AudioInput, recorder: SessionRecorder) -> None:
        self._inner = inner
        self._recorder = recorder

    async def frames(self) -> AsyncIterator[AudioFrame]:
        async for frame in self._inner.frames():
            self._recorder._caller_frame(frame)
            yield frame

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _TapOutput(AudioOutput):
    """Forwards to the transport's output; keeps what it accepted, forgets what `clear` dropped."""

    def __init__(self, inner: AudioOutput, recorder: SessionRecorder) -> None:
        self._inner = inner
        self._recorder = recorder
        self.sample_rate = inner.sample_rate
        self.channels = inner.channels
        self.frame_ms = inner.frame_ms

    async def write(self, frame: AudioFrame) -> None:
        await self._inner.write(frame)
        self._recorder._agent_frame(frame)

    def clear(self) -> float:
        dropped = self._inner.clear()
        self._recorder._agent_cleared(dropped)
        return dropped

    @property
    def buffered_ms(self) -> float:
        return self._inner.buffered_ms

    async def wait_drained(self) -> None:
        await self._inner.wait_drained()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class SessionRecorder:
    """Records one call. ``attach(session, transport)`` before ``session.start(transport)``::

    recorder = SessionRecorder("recordings")
    recorder.attach(session, transport)
    await session.start(transport)
    ...
    paths = await recorder.saved()  # after the call ends
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        sample_rate: int = 24000,
        on_saved: Callable[[Path, Path], None] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self._on_saved = on_saved
        self.sample_rate = sample_rate
        self.json_path: Path | None = None
        self.wav_path: Path | None = None
        self._t0 = time.monotonic()
        self._started_at = datetime.now(timezone.utc)
        self._caller = _Track()
        self._agent = _Track()
        self._session: AgentSession | None = None
        self._timeline: list[dict[str, Any]] = []
        self._turns: list[dict[str, Any]] = []
        self._tools: list[dict[str, Any]] = []
        self._errors: list[dict[str, Any]] = []
        self._done: asyncio.Future[tuple[Path, Path]] | None = None

    # wiring ------------------------------------------------------------------------------
    def attach(self, session: AgentSession, transport: Transport) -> None:
        """Tap ``transport``'s audio and subscribe to ``session``'s events."""
        self._session = session
        self._t0 = time.monotonic()
        self._started_at = datetime.now(timezone.utc)
        self._done = asyncio.get_running_loop().create_future()
        transport.audio_input = _TapInput(transport.audio_input, self)
        transport.audio_output = _TapOutput(transport.audio_output, self)
        session.on(ConversationItemAdded, self._on_item)
        session.on(UserTranscribed, self._on_user_transcribed)
        session.on(AgentInterrupted, self._on_interrupted)
        session.on(MetricsCollected, self._on_metrics)
        session.on(ToolExecuted, self._on_tool)
        session.on(SessionError, self._on_error)
        session.on(SessionClosed, self._on_closed)

    async def saved(self, timeout: float = 30.0) -> tuple[Path, Path]:
        """The (JSON, WAV) paths, once the call has ended and both are written."""
        if self._done is None:
            raise RuntimeError("attach() the recorder to a session first")
        return await asyncio.wait_for(asyncio.shield(self._done), timeout)

    # taps --------------------------------------------------------------------------------
    def _now_ms(self) -> float:
        return 1000.0 * (time.monotonic() - self._t0)

    def _caller_frame(self, frame: AudioFrame) -> None:
        # Frames arrive at the end of their audio; a burst is laid end to end, a gap kept.
        at = max(self._caller.cursor_ms, self._now_ms() - frame.duration_ms)
        self._caller.add(at, frame)

    def _agent_frame(self, frame: AudioFrame) -> None:
        # Accepted now: it plays after what is queued, or now if the line was idle.
        self._agent.add(max(self._agent.cursor_ms, self._now_ms()), frame)

    def _agent_cleared(self, dropped_ms: float) -> None:
        if dropped_ms > 0:
            self._agent.drop_after(self._agent.cursor_ms - dropped_ms)

    # events ------------------------------------------------------------------------------
    def _mark(self, event: str, **fields: Any) -> None:
        self._timeline.append({"at_ms": round(self._now_ms(), 1), "event": event, **fields})

    def _on_item(self, ev: ConversationItemAdded) -> None:
        self._mark("item_added", item_id=ev.item.id, type=ev.item.type)

    def _on_user_transcribed(self, ev: UserTranscribed) -> None:
        if ev.final:
            self._mark("user_transcribed", item_id=ev.item_id, text=ev.text)

    def _on_interrupted(self, ev: AgentInterrupted) -> None:
        self._mark(
            "agent_interrupted",
            item_id=ev.item_id,
            played_ms=ev.played_ms,
            latency_ms=ev.latency_ms,
        )

    def _on_metrics(self, ev: MetricsCollected) -> None:
        self._turns.append({"at_ms": round(self._now_ms(), 1), **dataclasses.asdict(ev.metrics)})

    def _on_tool(self, ev: ToolExecuted) -> None:
        self._tools.append(
            {
                "at_ms": round(self._now_ms(), 1),
                "call_id": ev.call.call_id,
                "name": ev.call.name,
                "arguments": ev.call.arguments,
                "output": ev.output.output,
                "is_error": ev.output.is_error,
                "duration_ms": round(1000.0 * ev.duration_s, 1),
            }
        )

    def _on_error(self, ev: SessionError) -> None:
        self._mark("error", code=ev.code, message=ev.message, recoverable=ev.recoverable)

    async def _on_closed(self, ev: SessionClosed) -> None:
        self._mark("closed", reason=ev.reason)
        assert self._session is not None and self._done is not None
        document = self._document(ev.reason)
        name = self._session.id
        try:
            paths = await asyncio.to_thread(self._write, name, document)
        except Exception as e:
            log.exception("could not save the recording of %s", name)
            if not self._done.done():
                self._done.set_exception(e)
            return
        if not self._done.done():
            self._done.set_result(paths)
        if self._on_saved is not None:
            self._on_saved(*paths)

    # output ------------------------------------------------------------------------------
    def _document(self, reason: str) -> dict[str, Any]:
        assert self._session is not None
        return {
            "session_id": self._session.id,
            "started_at": self._started_at.isoformat(timespec="milliseconds"),
            "duration_ms": round(self._now_ms(), 1),
            "close_reason": reason,
            "items": [item_to_json(item) for item in self._session.conversation],
            "turns": self._turns,
            "tools": self._tools,
            "timeline": self._timeline,
            "audio": {
                "sample_rate": self.sample_rate,
                "channels": ["caller", "agent (as heard)"],
            },
        }

    def _write(self, name: str, document: dict[str, Any]) -> tuple[Path, Path]:
        self.directory.mkdir(parents=True, exist_ok=True)
        rate = self.sample_rate
        end_ms = max(self._caller.cursor_ms, self._agent.cursor_ms, document["duration_ms"])
        length = max(1, round(end_ms * rate / 1000.0))
        stereo = np.stack(
            [self._caller.render(rate, length), self._agent.render(rate, length)], axis=1
        )
        wav_path = self.directory / f"{name}.wav"
        json_path = self.directory / f"{name}.json"
        sf.write(wav_path, stereo, rate, subtype="PCM_16", format="WAV")  # any length
        document["audio"]["file"] = wav_path.name
        json_path.write_text(json.dumps(document, indent=2, ensure_ascii=False))
        self.json_path, self.wav_path = json_path, wav_path
        log.info("recorded the call to %s and %s", json_path, wav_path)
        return json_path, wav_path
