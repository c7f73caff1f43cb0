"""`OpenAIRealtime`: the backend factory (configuration, credentials, capabilities)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

import aiohttp

from duplex.agents.backend import Backend, Capabilities
from duplex.agents.conversation import Conversation
from duplex.agents.errors import ConfigurationError
from duplex.agents.tools import FunctionTool

from .options import (
    AudioFormat,
    DialectName,
    Endpoint,
    InputTranscription,
    Modality,
    NoiseReduction,
    RealtimeOptions,
    ReconnectPolicy,
    ResponsePolicy,
    SemanticVAD,
    ServerVAD,
    TurnDetection,
    openai_endpoint,
)
from .options import azure_endpoint as _azure_endpoint
from .session import OpenAIRealtimeSession

_DEFAULT_TRANSCRIPTION = InputTranscription()
_DEFAULT_TURNS = ServerVAD()


class OpenAIRealtime(Backend):
    """The OpenAI Realtime protocol over WebSocket: OpenAI, Azure, or any compatible server.

    Credentials and options are checked here, so a misconfigured deployment fails
    at construction with `ConfigurationError` rather than on the first call.
    ``http_session`` shares an `aiohttp.ClientSession` (the caller closes it).
    """

    def __init__(
        self,
        *,
        model: str = "gpt-realtime",
        instructions: str | None = None,
        voice: str = "marin",
        modality: Modality = "audio",
        input_audio_format: AudioFormat = "pcm16",
        output_audio_format: AudioFormat = "pcm16",
        input_transcription: InputTranscription | None = _DEFAULT_TRANSCRIPTION,
        turn_detection: TurnDetection | None = _DEFAULT_TURNS,
        noise_reduction: NoiseReduction | None = None,
        tool_choice: str = "auto",
        temperature: float | None = None,
        max_output_tokens: int | Literal["inf"] = "inf",
        speed: float | None = None,
        dialect: DialectName = "ga",
        response_policy: ResponsePolicy | None = None,
        max_session_duration: float | None = 20 * 60.0,
        reconnect: ReconnectPolicy | None = None,
        request_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        first_connect_timeout: float = 5.0,
        heartbeat_s: float | None = 15.0,
        reply_start_timeout: float | None = 20.0,
        reply_idle_timeout: float | None = 30.0,
        append_cadence_ms: float = 20.0,
        base_url: str | None = None,
        api_key: str | None = None,
        env: Mapping[str, str] | None = None,
        http_session: aiohttp.ClientSession | None = None,
        _endpoint: Endpoint | None = None,
    ) -> None:
        """``temperature`` works on the beta dialect only: the GA Realtime API has none
        (`ConfigurationError` says so). ``response_policy`` is a deprecated alias that is
        checked, warned about and ignored: `AgentSession(reply_policy=...)` decides what a
        second request does, and this backend only queues requests one at a time."""
        if response_policy is not None:
            if response_policy not in ("cancel_existing", "cancel_new", "keep_both"):
                raise ConfigurationError(f"unknown response_policy {response_policy!r}")
            warnings.warn(
                "OpenAIRealtime(response_policy=...) is deprecated and ignored: use "
                "AgentSession(reply_policy=...)",
                DeprecationWarning,
                stacklevel=2,
            )
        self.options = RealtimeOptions(
            model=model,
            instructions=instructions,
            voice=voice,
            modality=modality,
            input_audio_format=input_audio_format,
            output_audio_format=output_audio_format,
            input_transcription=input_transcription,
            turn_detection=turn_detection,
            noise_reduction=noise_reduction,
            tool_choice=tool_choice,
            temperature=temperature,
            max_output_tokens=max_output_tokens,
            speed=speed,
            dialect=dialect,
            max_session_duration=max_session_duration,
            reconnect=reconnect or ReconnectPolicy(),
            request_timeout=request_timeout,
            connect_timeout=connect_timeout,
            first_connect_timeout=first_connect_timeout,
            heartbeat_s=heartbeat_s,
            reply_start_timeout=reply_start_timeout,
            reply_idle_timeout=reply_idle_timeout,
            append_cadence_ms=append_cadence_ms,
        )
        self.options.validate()
        #: Shared HTTP client (its connection pool, proxies, TLS settings); never closed here.
        self.http_session = http_session
        self.endpoint = _endpoint or openai_endpoint(
            model=model, dialect=dialect, base_url=base_url, api_key=api_key, env=env
        )
        self.capabilities = _capabilities(self.options)

    @classmethod
    def with_azure(
        cls,
        *,
        azure_deployment: str | None = None,
        azure_endpoint: str | None = None,
        api_version: str | None = None,
        api_key: str | None = None,
        entra_token: str | None = None,
        env: Mapping[str, str] | None = None,
        base_url: str | None = None,
        **options: Any,
    ) -> OpenAIRealtime:
        """Azure OpenAI. Without ``api_version`` (or with "v1") the GA ``/openai/v1`` path is
        used; a dated preview version selects the legacy path and the beta dialect.
        ``base_url`` names the GA base in full (``https://<resource>.openai.azure.com/openai/v1``
        or a gateway in front of it) instead of ``azure_endpoint``.

        Reads AZURE_OPENAI_ENDPOINT, AZURE_OPENAI_API_KEY, AZURE_OPENAI_AD_TOKEN and
        OPENAI_API_VERSION when the arguments are not given.
        """
        if "dialect" in options:
            raise ConfigurationError("with_azure() sets the dialect itself")
        if base_url is not None and azure_endpoint is not None:
            raise ConfigurationError("pass either base_url or azure_endpoint, not both")
        deployment = azure_deployment or options.get("model")
        endpoint, dialect = _azure_endpoint(
            deployment=deployment,
            endpoint=azure_endpoint,
            api_version=api_version,
            api_key=api_key,
            entra_token=entra_token,
            env=os.environ if env is None else env,
            base_url=base_url,
        )
        return cls(dialect=dialect, _endpoint=endpoint, **options)

    def __repr__(self) -> str:
        o = self.options
        return (
            f"OpenAIRealtime(model={o.model!r}, voice={o.voice!r}, dialect={o.dialect!r}, "
            f"url={self.endpoint.url!r})"
        )

    def with_options(self, **changes: Any) -> OpenAIRealtime:
        """A copy with some options changed (same endpoint and credentials)."""
        clone = object.__new__(OpenAIRealtime)
        clone.options = replace(self.options, **changes)
        clone.options.validate()
        clone.endpoint = self.endpoint
        clone.http_session = self.http_session
        clone.capabilities = _capabilities(clone.options)
        return clone

    async def connect(
        self,
        *,
        instructions: str,
        tools: Sequence[FunctionTool],
        conversation: Conversation,
    ) -> OpenAIRealtimeSession:
        """Open a session; the agent's instructions win, the ``instructions`` option is the
        fallback when the agent gives none."""
        session = OpenAIRealtimeSession(
            opts=self.options,
            endpoint=self.endpoint,
            instructions=instructions or self.options.instructions or "",
            tools=tools,
            http=self.http_session,
        )
        await session.start(conversation)
        return session


def _capabilities(o: RealtimeOptions) -> Capabilities:
    td = o.turn_detection
    server_vad = isinstance(td, (ServerVAD, SemanticVAD))
    return Capabilities(
        server_vad=server_vad,
        truncation=True,
        audio_output=o.modality == "audio",
        input_sample_rate=o.input_rate,
        output_sample_rate=o.output_rate,
        tools=True,
        user_transcription=o.input_transcription is not None,
        auto_tool_reply=False,
        server_interrupts=server_vad and bool(getattr(td, "interrupt_response", False)),
        server_replies=server_vad and getattr(td, "create_response", True) is not False,
    )
