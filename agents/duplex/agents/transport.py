"""What a call looks like to the session: audio in, paced audio out, events to the far side.

Implementations (LiveKit room, browser peer, console, phone, memory) live in
plugins; the session only sees this interface.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

from .audio import AudioFrame

TextHandler = Callable[[str], Awaitable[None]]


class FrameSink(Protocol):
    """Where a push-capable input delivers frames (the session's `InputPath`)."""

    #: Frames it dropped because its own bounded backlog overflowed.
    dropped: int

    def feed(self, frame: AudioFrame) -> None: ...

    def end(self) -> None: ...


class AudioInput(ABC):
    """The caller's microphone. Frames may have any supported rate and channel count."""

    #: Audio that may wait for a slow consumer before the oldest goes (None: its own bound).
    max_backlog_ms: float | None = None

    @abstractmethod
    def frames(self) -> AsyncIterator[AudioFrame]:
        """Frames until the call ends; the iterator stops when the input closes."""

    def set_sink(self, sink: FrameSink | None) -> bool:
        """Deliver frames by calling ``sink.feed`` from the producer's own callback.

        Push-style delivery saves a queue hop and a task switch per frame. Returns
        False when this input can only be read with `frames` (the default); None
        detaches. Frames queued before attaching are delivered first, in order.
        """
        return False


class QueuedAudioInput(AudioInput):
    """Caller audio handed over by a device or SDK callback, through a bounded queue.

    A stalled consumer must not make a call buffer forever: past ``max_queue_ms``
    the oldest frame goes, so what reaches the session is the newest audio.
    """

    def __init__(self, *, max_queue_ms: float = 2000.0, frame_ms: float = 10.0) -> None:
        self._queue: asyncio.Queue[AudioFrame | None] = asyncio.Queue()
        self._max_frames = max(1, int(max_queue_ms / frame_ms))
        self.max_backlog_ms = max_queue_ms
        self._closed = False
        self._sink: FrameSink | None = None
        self._dropped = 0

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def dropped_frames(self) -> int:
        """Frames thrown away because nobody consumed them in time (here or in the sink)."""
        return self._dropped + (self._sink.dropped if self._sink is not None else 0)

    def set_sink(self, sink: FrameSink | None) -> bool:
        if self._sink is not None:
            self._dropped += self._sink.dropped
        self._sink = sink
        if sink is not None:
            while not self._queue.empty():
                frame = self._queue.get_nowait()
                if frame is None:
                    sink.end()
                    break
                sink.feed(frame)
            if self._closed:
                sink.end()
        return True

    def put(self, frame: AudioFrame) -> None:
        """Call from the event loop's thread."""
        if self._closed:
            return
        if self._sink is not None:
            self._sink.feed(frame)
            return
        if self._queue.qsize() >= self._max_frames:
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()
                self._dropped += 1
        self._queue.put_nowait(frame)

    async def frames(self) -> AsyncIterator[AudioFrame]:
        while True:
            frame = await self._queue.get()
            if frame is None:
                self._queue.put_nowait(None)  # later iterators end too
                return
            yield frame

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._sink is not None:
                self._sink.end()
            else:
                self._queue.put_nowait(None)


class AudioOutput(ABC):
    """The agent's speaker, paced by the far side's clock.

    `write` applies back-pressure: it returns once the frame is accepted, and a
    transport accepts only a small buffer ahead of what is playing. `clear` drops
    the buffer, which is how an interruption stops the audio within a frame.
    """

    sample_rate: int = 48000
    channels: int = 1
    #: Size of the frames the session writes (small frames stop sooner).
    frame_ms: float = 20.0

    @abstractmethod
    async def write(self, frame: AudioFrame) -> None: ...

    @abstractmethod
    def clear(self) -> float:
        """Drop everything accepted but not yet played; returns the milliseconds dropped."""

    @property
    @abstractmethod
    def buffered_ms(self) -> float:
        """Milliseconds accepted by `write` and not yet played."""

    @abstractmethod
    async def wait_drained(self) -> None:
        """Return when everything written has been played."""

    def pause(self) -> bool:
        """Hold playback where it is (silence meanwhile); False when this output cannot.

        Outputs built on `duplex.agents.output_buffer.BufferedAudioOutput` can; the
        session then resumes a reply after a false interruption instead of cutting it.
        """
        return False

    def resume(self) -> None:  # noqa: B027 - optional, pairs with pause()
        """Continue playback from where `pause` held it."""


class Transport(ABC):
    """A call. `closed` is set when the far side hangs up or the link dies."""

    audio_input: AudioInput
    audio_output: AudioOutput

    def __init__(self) -> None:
        self.closed = asyncio.Event()
        self._text_handler: TextHandler | None = None

    async def start(self) -> None:  # noqa: B027 - optional: transports that connect override it
        """Connect; called once by `AgentSession.start`."""

    def publish(self, event: object) -> None:  # noqa: B027 - optional
        """Forward a session event (transcript, state, tool call) to the far side's UI, if any."""

    def set_text_handler(self, handler: TextHandler | None) -> None:
        """Where text typed by the caller (chat, data channel) goes."""
        self._text_handler = handler

    async def deliver_text(self, text: str) -> None:
        if self._text_handler is not None:
            await self._text_handler(text)

    async def aclose(self) -> None:
        self.closed.set()
