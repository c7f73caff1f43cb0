"""pipecat under test: a `PipelineWorker` with its `OpenAIRealtimeLLMService`.

The transport follows pipecat's output contract: `write_audio_frame` takes the chunks
its base output transport hands over (it chunks and paces them itself) and returns once
the 1x `PlayoutClock` has room, which is the back-pressure a real transport gives; an
`InterruptionFrame` clears what is buffered at once. Caller audio enters as pipecat's
own transports push it, one `InputAudioRawFrame` per 20 ms. The pipeline is pipecat's
own shape for a realtime service: input, the user context aggregator, the service,
output, the assistant context aggregator. The aggregator pair is what turns the
service's proposed user turn (the server's ``speech_started``) into an interruption;
without it pipecat never stops its output on a barge-in. Server VAD and every other
setting is pipecat's default.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Any

import numpy as np
from loguru import logger
from pipecat.frames.frames import (
    ErrorFrame,
    InputAudioRawFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    StartFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import TransportParams

from . import config as C
from .clock import PlayoutClock

BUFFER_FRAMES = 5  # 100 ms, as duplex's and livekit's sinks

# pipecat logs every frame at DEBUG through loguru; at 100 sessions that alone is a load.
logger.remove()
logger.add(sys.stderr, level="WARNING")


class BenchInput(BaseInputTransport):
    #: Until the pipeline has started the transport, a microphone frame has nowhere to go
    #: (a real transport is not receiving yet): it is dropped.
    ready = False

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)
        self.ready = True

    def push_pcm(self, pcm: np.ndarray) -> None:
        if not self.ready:
            return
        frame = InputAudioRawFrame(audio=pcm.tobytes(), sample_rate=C.INPUT_RATE, num_channels=1)
        asyncio.get_running_loop().create_task(self.push_audio_frame(frame))


class BenchOutput(BaseOutputTransport):
    def __init__(self, params: TransportParams, clock: PlayoutClock) -> None:
        super().__init__(params)
        self.clock = clock

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        await self.clock.wait_space(BUFFER_FRAMES)
        self.clock.write(len(frame.audio) / 2 / frame.sample_rate)
        return True

    async def process_frame(self, frame: Any, direction: FrameDirection) -> None:
        if isinstance(frame, InterruptionFrame):
            self.clock.clear()
        await super().process_frame(frame, direction)


class PipecatCall:
    def __init__(self, url: str, sid: str, clock: PlayoutClock) -> None:
        params = TransportParams(
            audio_in_enabled=True,
            audio_in_sample_rate=C.INPUT_RATE,
            audio_out_enabled=True,
            audio_out_sample_rate=C.OUTPUT_RATE,
        )
        self.input = BenchInput(params)
        self.output = BenchOutput(params, clock)
        ws = url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        llm = OpenAIRealtimeLLMService(api_key="sk-bench", model=sid, base_url=f"{ws}/realtime")
        context = LLMContext([{"role": "system", "content": "You are the benchmark's agent."}])
        turns = LLMContextAggregatorPair(context)
        self.worker = PipelineWorker(
            Pipeline([self.input, turns.user(), llm, self.output, turns.assistant()]),
            params=PipelineParams(
                audio_in_sample_rate=C.INPUT_RATE, audio_out_sample_rate=C.OUTPUT_RATE
            ),
            idle_timeout_secs=None,
            enable_rtvi=False,
            check_dangling_tasks=False,
        )
        self.errors = 0

        async def count(_worker: object, frame: ErrorFrame) -> None:
            self.errors += 1

        self.worker.add_event_handler("on_pipeline_error", count)

        self._runner = PipelineRunner(handle_sigint=False)
        self._run: asyncio.Task[None] | None = None

    def push(self, pcm: np.ndarray) -> None:
        self.input.push_pcm(pcm)

    async def start(self) -> None:
        self._run = asyncio.create_task(self._runner.run(self.worker))

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.worker.cancel()
        if self._run is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._run, 10)
