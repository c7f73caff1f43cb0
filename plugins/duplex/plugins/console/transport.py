"""`ConsoleTransport`: talk to the agent with the local microphone and speaker, or type.

Transcripts are printed as they become final. Typed lines (stdin, or any async
line source) go to the agent as text; in ``text_only`` mode no sound device is
opened at all and the agent's audio is discarded, which also works over SSH.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from typing import Any, TextIO

from duplex.agents.audio import AudioFrame
from duplex.agents.events import AgentStateChanged, AgentTranscribed, UserTranscribed
from duplex.agents.transport import AudioInput, AudioOutput, Transport

from .audio import ConsoleAudioInput, ConsoleAudioOutput, DeviceStream
from .devices import resolve_device


class _NoInput(AudioInput):
    """Text mode: no microphone; the iterator ends when the call does."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.channels = 1
        self._closed = asyncio.Event()

    async def frames(self) -> AsyncIterator[AudioFrame]:
        await self._closed.wait()
        return
        yield  # pragma: no cover - makes this an async generator

    def close(self) -> None:
        self._closed.set()


class _DiscardOutput(AudioOutput):
    """Text mode: the agent's audio is dropped as if played instantly."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.channels = 1
        self.played_ms = 0.0

    async def write(self, frame: AudioFrame) -> None:
        self.played_ms += frame.duration_ms

    def clear(self) -> float:
        return 0.0

    @property
    def buffered_ms(self) -> float:
        return 0.0

    async def wait_drained(self) -> None:
        return None


async def stdin_lines() -> AsyncIterator[str]:
    """Lines typed on stdin, without blocking the event loop."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        yield line.decode(errors="replace")


class ConsoleTransport(Transport):
    def __init__(
        self,
        *,
        input_device: str | int | None = None,
        output_device: str | int | None = None,
        sample_rate: int = 48000,
        echo_cancellation: bool = True,
        text_only: bool = False,
        lines: AsyncIterator[str] | None = None,
        out: TextIO | None = None,
        output_buffer_ms: float = 200.0,
        close_on_eof: bool | None = None,
        device_latency: float | str = "low",
    ) -> None:
        super().__init__()
        self.text_only = text_only
        self._input_device = input_device
        self._output_device = output_device
        self._echo_cancellation = echo_cancellation
        self._device_latency = device_latency
        self._lines = lines
        self._out = out if out is not None else sys.stdout
        # typing ends a text-only chat; with a microphone the call goes on without a keyboard
        self._close_on_eof = text_only if close_on_eof is None else close_on_eof
        self.device: DeviceStream | None = None
        self.audio_input: AudioInput
        self.audio_output: AudioOutput
        if text_only:
            self.audio_input = _NoInput(sample_rate)
            self.audio_output = _DiscardOutput(sample_rate)
        else:
            self.audio_input = ConsoleAudioInput(sample_rate)
            self.audio_output = ConsoleAudioOutput(sample_rate, buffer_ms=output_buffer_ms)
        self._reader: asyncio.Task[None] | None = None
        self.transcript: list[tuple[str, str]] = []
        #: Set while a typed line has not been answered yet.
        self._answered = asyncio.Event()
        self._answered.set()
        self._replying = False
        #: Set once the session takes text: lines typed (or piped) before that are kept.
        self._accepting = asyncio.Event()

    def set_text_handler(self, handler: Any) -> None:
        super().set_text_handler(handler)
        if handler is not None:
            self._accepting.set()

    async def start(self) -> None:
        if not self.text_only:
            assert isinstance(self.audio_input, ConsoleAudioInput)
            assert isinstance(self.audio_output, ConsoleAudioOutput)
            self.device = DeviceStream(
                self.audio_input,
                self.audio_output,
                input_device=resolve_device(self._input_device, kind="input"),
                output_device=resolve_device(self._output_device, kind="output"),
                echo_cancellation=self._echo_cancellation,
                latency=self._device_latency,
            )
            self.device.start()
        lines = self._lines
        if lines is None and self.text_only:
            lines = stdin_lines()
        if lines is not None:
            self._reader = asyncio.get_running_loop().create_task(self._read(lines))

    async def _read(self, lines: AsyncIterator[str]) -> None:
        async for line in lines:
            text = line.strip()
            if text:
                await self._accepting.wait()  # the backend may still be connecting
                self._answered.clear()
                self._replying = False
                await self.deliver_text(text)
        if self._close_on_eof:
            # piped input (``echo hi | agent console --text``): answer the last line first
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._answered.wait(), 120)
            await self.aclose()

    def publish(self, event: object) -> None:
        if isinstance(event, AgentStateChanged):
            if event.new in ("thinking", "speaking"):
                self._replying = True
            elif event.new == "listening" and self._replying:
                self._replying = False
                self._answered.set()
        elif isinstance(event, UserTranscribed) and event.final:
            self._say("you", event.text)
        elif isinstance(event, AgentTranscribed) and event.final:
            self._say("agent", event.text)

    def _say(self, who: str, text: str) -> None:
        self.transcript.append((who, text))
        print(f"{who}: {text}", file=self._out, flush=True)

    async def aclose(self) -> None:
        if self.closed.is_set():
            return
        if self.device is not None:
            self.device.stop()
        close: Any = getattr(self.audio_input, "close", None)
        if close is not None:
            close()
        if isinstance(self.audio_output, ConsoleAudioOutput):
            self.audio_output.close()
        reader, self._reader = self._reader, None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        await super().aclose()
