"""Preemptive replies: start answering the transcript heard so far while the turn may still go on.

When the caller pauses (``pause_ms`` of quiet in the audio pushed so far) and the
STT reports the words it has, a *speculation* starts: the LLM runs on the
conversation as it would be with those words, and the reply's first piece is
synthesised into a buffer. Nothing is emitted. When the turn is committed and the
reply is requested, `Preemption.take` compares the real request with the one the
speculation ran on (messages, tools, tool choice): equal, and the reply replays
the speculation's text and audio and continues from its live streams, so its
first audio is ready; different, and the speculation is cancelled and dropped
without trace — nothing reaches the caller or the conversation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from duplex.agents.audio import AudioFrame
from duplex.agents.backend import ToolChoice
from duplex.agents.stages import LLM, TTS, LLMChunk, TextChunk

from .text import SentenceSplitter

logger = logging.getLogger(__name__)

_END = object()


@dataclass(frozen=True)
class PreemptiveOptions:
    #: Quiet at the end of the caller's audio that makes a transcript worth answering.
    pause_ms: float = 150.0
    #: Level below the loudest 20 ms so far (dB) that counts as quiet.
    quiet_db: float = 25.0
    #: Speculations per turn at most (each costs an LLM call).
    max_per_turn: int = 3


@dataclass(frozen=True)
class SpeculationKey:
    """What a reply depends on: a speculation is used only for an identical request."""

    messages: list[dict[str, Any]]
    tools: Sequence[dict[str, Any]]
    tool_choice: ToolChoice | None


class _Stream:
    """A buffer filled by one producer and replayed from the start by one later reader."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.ended = False
        self.error: BaseException | None = None
        self._changed = asyncio.Event()

    def put(self, item: Any) -> None:
        self.items.append(item)
        self._changed.set()

    def end(self, error: BaseException | None = None) -> None:
        self.ended, self.error = True, error
        self._changed.set()

    async def replay(self) -> AsyncIterator[Any]:
        i = 0
        while True:
            while i < len(self.items):
                yield self.items[i]
                i += 1
            if self.ended:
                if self.error is not None:
                    raise self.error
                return
            self._changed.clear()
            if i == len(self.items) and not self.ended:
                await self._changed.wait()


@dataclass
class Speculation:
    key: SpeculationKey
    llm_out: _Stream = field(default_factory=_Stream)
    first_text: str | None = None
    first_audio: _Stream = field(default_factory=_Stream)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def cancel(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class _ReplayLLM(LLM):
    """The speculation's LLM output, then its live continuation, for one request."""

    def __init__(self, spec: Speculation) -> None:
        self._spec = spec

    async def stream(
        self,
        messages: Sequence[dict[str, Any]],
        *,
        tools: Sequence[dict[str, Any]] = (),
        tool_choice: ToolChoice | None = None,
    ) -> AsyncIterator[LLMChunk]:
        finished = False
        try:
            async for chunk in self._spec.llm_out.replay():
                yield chunk
            finished = True
        finally:
            if not finished:  # the reply stopped early (barge-in): stop the model too
                for t in self._spec.tasks:
                    t.cancel()


class _ReplayTTS(TTS):
    """The speculation's first piece from its buffer; any other text from the real TTS."""

    def __init__(self, spec: Speculation, tts: TTS) -> None:
        self._spec = spec
        self._tts = tts
        self.sample_rate = tts.sample_rate
        self._used = False

    async def prepare(self) -> None:
        await self._tts.prepare()

    def synthesize(self, text: str) -> AsyncIterator[AudioFrame]:
        if not self._used and text == self._spec.first_text:
            self._used = True
            return self._spec.first_audio.replay()
        return self._tts.synthesize(text)


class Preemption:
    """Per-session speculation state; the session calls `observe`, `heard`, `take`, `drop`."""

    def __init__(
        self,
        *,
        llm: LLM,
        tts: TTS,
        key_for: Callable[[str], SpeculationKey],
        sentence_min_chars: int = 4,
        options: PreemptiveOptions | None = None,
    ) -> None:
        self._llm = llm
        self._tts = tts
        self._key_for = key_for
        self._sentence_min_chars = sentence_min_chars
        self.options = options or PreemptiveOptions()
        self._quiet_ratio = 10 ** (-self.options.quiet_db / 20)
        self._peak = 0.0
        self._quiet_ms = 0.0
        self._started = 0
        self._text: str | None = None
        self._spec: Speculation | None = None
        self._pending_drop: set[asyncio.Task[None]] = set()
        #: Speculations started / used / dropped (for tests and metrics).
        self.started = 0
        self.used = 0
        self.dropped = 0

    # --- input -------------------------------------------------------------------------
    def observe(self, frame: AudioFrame) -> None:
        """Caller audio as pushed to the STT: tracks how long it has been quiet."""
        pcm = frame.data[:, 0].astype(np.float32)
        level = float(np.sqrt(np.mean(pcm * pcm))) / 32768.0 if len(pcm) else 0.0
        self._peak = max(self._peak, level)
        if level > max(self._peak * self._quiet_ratio, 1e-4):
            self._quiet_ms = 0.0
        else:
            self._quiet_ms += frame.duration_ms

    def heard(self, text: str) -> None:
        """The STT's transcript so far; speculate on it when the caller has paused."""
        text = text.strip()
        if (
            not text
            or self._quiet_ms < self.options.pause_ms
            or text == self._text
            or self._started >= self.options.max_per_turn
        ):
            return
        self._discard()
        self._text = text
        self._started += 1
        self.started += 1
        self._spec = self._speculate(self._key_for(text))

    def new_turn(self) -> None:
        """A new utterance began: whatever was speculated belonged to the last one."""
        self._discard()
        self._peak = 0.0
        self._quiet_ms = 0.0
        self._started = 0
        self._text = None

    # --- the speculation ------------------------------------------------------------------
    def _speculate(self, key: SpeculationKey) -> Speculation:
        spec = Speculation(key)
        spec.tasks.append(asyncio.create_task(self._run_llm(spec), name="cascade-preempt-llm"))
        return spec

    async def _run_llm(self, spec: Speculation) -> None:
        splitter = SentenceSplitter(self._sentence_min_chars)
        stream = self._llm.stream(
            spec.key.messages, tools=spec.key.tools, tool_choice=spec.key.tool_choice
        )
        try:
            async for chunk in stream:
                spec.llm_out.put(chunk)
                if spec.first_text is None and isinstance(chunk, TextChunk) and chunk.text:
                    first = next(iter(splitter.push(chunk.text)), None)
                    if first is not None:
                        self._start_tts(spec, first)
            if spec.first_text is None:
                rest = splitter.flush()
                if rest:
                    self._start_tts(spec, rest)
            spec.llm_out.end()
        except asyncio.CancelledError:
            spec.llm_out.end(asyncio.CancelledError())
            raise
        except Exception as e:  # replayed to the reply, which reports it as it would
            spec.llm_out.end(e)
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()

    def _start_tts(self, spec: Speculation, text: str) -> None:
        spec.first_text = text
        spec.tasks.append(asyncio.create_task(self._run_tts(spec), name="cascade-preempt-tts"))

    async def _run_tts(self, spec: Speculation) -> None:
        assert spec.first_text is not None
        stream = self._tts.synthesize(spec.first_text)
        try:
            async for frame in stream:
                spec.first_audio.put(frame)
            spec.first_audio.end()
        except asyncio.CancelledError:
            spec.first_audio.end(asyncio.CancelledError())
            raise
        except Exception as e:
            spec.first_audio.end(e)
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()

    # --- the reply ------------------------------------------------------------------------
    def take(self, key: SpeculationKey) -> tuple[LLM, TTS]:
        """The stages the reply should use: the speculation's if it ran on this very request."""
        spec, self._spec = self._spec, None
        self._text = None
        if spec is not None and spec.key == key:
            self.used += 1
            return _ReplayLLM(spec), _ReplayTTS(spec, self._tts)
        if spec is not None:
            self._drop(spec)
        return self._llm, self._tts

    def _discard(self) -> None:
        spec, self._spec = self._spec, None
        if spec is not None:
            self._drop(spec)

    def _drop(self, spec: Speculation) -> None:
        self.dropped += 1
        task = asyncio.create_task(spec.cancel(), name="cascade-preempt-drop")
        self._pending_drop.add(task)
        task.add_done_callback(self._pending_drop.discard)

    async def aclose(self) -> None:
        self._discard()
        await asyncio.gather(*self._pending_drop, return_exceptions=True)
