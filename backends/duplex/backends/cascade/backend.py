"""`CascadeBackend`: speech-to-text -> language model -> text-to-speech as one backend."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from duplex.agents.backend import Backend, Capabilities
from duplex.agents.conversation import Conversation
from duplex.agents.stages import LLM, STT, TTS
from duplex.agents.tools import FunctionTool

from .preemptive import PreemptiveOptions
from .session import CascadeSession


class CascadeBackend(Backend):
    """Three pluggable stages behind the `Backend` interface.

    Turn detection is the session's local VAD (there is no server VAD); replies can
    be truncated exactly, because the backend knows which sentence each sample spoke.
    Stages are shared by every session of the deployment (a loaded model, a pool).
    """

    def __init__(
        self,
        stt: STT,
        llm: LLM,
        tts: TTS,
        *,
        sentence_min_chars: int = 4,
        preemptive_generation: bool | PreemptiveOptions = True,
    ) -> None:
        self.stt = stt
        self.llm = llm
        self.tts = tts
        self.sentence_min_chars = sentence_min_chars
        #: Start the LLM (and the first audio) when the caller pauses; see `preemptive`.
        self.preemptive: PreemptiveOptions | None = (
            PreemptiveOptions() if preemptive_generation is True else preemptive_generation or None
        )
        self.capabilities = Capabilities(
            server_vad=False,
            truncation=True,
            audio_output=True,
            input_sample_rate=stt.sample_rate,
            output_sample_rate=tts.sample_rate,
            tools=True,
            user_transcription=True,
            auto_tool_reply=False,
            server_interrupts=False,
        )

    async def connect(
        self,
        *,
        instructions: str,
        tools: Sequence[FunctionTool],
        conversation: Conversation,
    ) -> CascadeSession:
        await self.tts.prepare()
        stt_session = await self.stt.connect()
        return CascadeSession(
            stt=stt_session,
            stt_rate=self.stt.sample_rate,
            llm=self.llm,
            tts=self.tts,
            instructions=instructions,
            tools=tools,
            conversation=conversation,
            sentence_min_chars=self.sentence_min_chars,
            preemptive=self.preemptive,
        )

    async def prewarm(self) -> None:
        await asyncio.gather(self.stt.prepare(), self.tts.prepare())

    async def aclose(self) -> None:
        await asyncio.gather(
            self.stt.aclose(), self.llm.aclose(), self.tts.aclose(), return_exceptions=True
        )
