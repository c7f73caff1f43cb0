"""Options of the OpenAI Realtime backend: validation, credentials, endpoints.

Everything is checked at construction so a bad deployment fails before it dials
out, and the API key lives in a `Secret` that never prints itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeAlias
from urllib.parse import urlencode, urlsplit, urlunsplit

from duplex.agents.errors import ConfigurationError

AudioFormat: TypeAlias = Literal["pcm16", "g711_ulaw", "g711_alaw"]
DialectName: TypeAlias = Literal["ga", "beta"]
Modality: TypeAlias = Literal["audio", "text"]
ResponsePolicy: TypeAlias = Literal["cancel_existing", "cancel_new", "keep_both"]
Eagerness: TypeAlias = Literal["low", "medium", "high", "auto"]
NoiseReduction: TypeAlias = Literal["near_field", "far_field"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: Error codes after which reconnecting cannot help.
FATAL_CODES = frozenset(
    {"invalid_api_key", "insufficient_quota", "account_deactivated", "billing_hard_limit_reached"}
)
_FORMATS = ("pcm16", "g711_ulaw", "g711_alaw")


def format_rate(fmt: AudioFormat) -> int:
    """Sample rate of a wire format: PCM16 is fixed at 24 kHz, G.711 at 8 kHz."""
    return 24000 if fmt == "pcm16" else 8000


class Secret:
    """Holds a credential; its repr and str are masked so it cannot leak into logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class ServerVAD:
    """Server-side energy VAD; the fields mirror the local `TurnOptions`."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    create_response: bool = True
    #: False keeps the reply playing when the caller talks over it (push-to-talk, kiosks).
    interrupt_response: bool = True
    idle_timeout_ms: int | None = None


@dataclass(frozen=True)
class SemanticVAD:
    """Model-based end of turn; ``eagerness`` trades latency for fewer cut-offs."""

    eagerness: Eagerness = "auto"
    create_response: bool = True
    interrupt_response: bool = True


TurnDetection: TypeAlias = ServerVAD | SemanticVAD


@dataclass(frozen=True)
class InputTranscription:
    """Transcribe the caller; on by default because apps expect user transcripts."""

    model: str = "gpt-4o-mini-transcribe"
    language: str | None = None
    prompt: str | None = None


@dataclass(frozen=True)
class ReconnectPolicy:
    """Exponential backoff with jitter for unplanned drops."""

    max_attempts: int = 6
    initial_delay: float = 0.5
    max_delay: float = 8.0
    #: Fraction of each delay drawn at random, so many agents do not retry in lockstep.
    jitter: float = 0.5


@dataclass(frozen=True)
class Endpoint:
    """Where and how to dial; ``secret_headers`` are masked in the repr."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    secret_headers: Mapping[str, Secret] = field(default_factory=dict, repr=False)
    send_beta_header: bool = False

    def all_headers(self) -> dict[str, str]:
        out = dict(self.headers)
        out.update({k: v.reveal() for k, v in self.secret_headers.items()})
        return out


@dataclass(frozen=True)
class RealtimeOptions:
    """The resolved configuration one backend hands to every session it opens."""

    model: str = "gpt-realtime"
    instructions: str | None = None
    voice: str = "marin"
    modality: Modality = "audio"
    input_audio_format: AudioFormat = "pcm16"
    output_audio_format: AudioFormat = "pcm16"
    input_transcription: InputTranscription | None = InputTranscription()
    turn_detection: TurnDetection | None = ServerVAD()
    noise_reduction: NoiseReduction | None = None
    tool_choice: str = "auto"
    temperature: float | None = None
    max_output_tokens: int | Literal["inf"] = "inf"
    speed: float | None = None
    dialect: DialectName = "ga"
    #: Deprecated and ignored: the session's ``reply_policy`` decides; requests always queue.
    response_policy: ResponsePolicy = "keep_both"
    #: Planned reconnect (rollover) after this many seconds, at a quiet moment; None disables.
    max_session_duration: float | None = 20 * 60.0
    reconnect: ReconnectPolicy = ReconnectPolicy()
    #: Last-resort bound on any acknowledged request; errors normally fail requests at once.
    request_timeout: float = 30.0
    connect_timeout: float = 10.0
    #: The first dial of a session is one attempt bounded by this: a wrong URL fails fast.
    first_connect_timeout: float = 5.0
    #: WebSocket ping interval; a pong later than half of it drops the socket. None: off.
    heartbeat_s: float | None = 15.0
    #: Reply watchdog: a response with no output this long after response.created, or
    #: no event this long after its last one, is failed and the connection rebuilt.
    reply_start_timeout: float | None = 20.0
    reply_idle_timeout: float | None = 30.0
    #: Caller audio per `input_audio_buffer.append` while the loop keeps up (ms); at or
    #: below the frame length every frame leaves at once. See `appends.DEFAULT_CADENCE_MS`.
    append_cadence_ms: float = 20.0

    def validate(self) -> None:
        if not self.model or not isinstance(self.model, str):
            raise ConfigurationError("model must be a non-empty string")
        if not self.voice:
            raise ConfigurationError("voice must be a non-empty string")
        if self.modality not in ("audio", "text"):
            raise ConfigurationError(f"modality must be 'audio' or 'text', not {self.modality!r}")
        for name in ("input_audio_format", "output_audio_format"):
            if getattr(self, name) not in _FORMATS:
                raise ConfigurationError(f"{name} must be one of {_FORMATS}")
        if self.dialect not in ("ga", "beta"):
            raise ConfigurationError(f"dialect must be 'ga' or 'beta', not {self.dialect!r}")
        if self.response_policy not in ("cancel_existing", "cancel_new", "keep_both"):
            raise ConfigurationError(f"unknown response_policy {self.response_policy!r}")
        if self.temperature is not None:
            if self.dialect != "beta":
                raise ConfigurationError(
                    "temperature exists only in the beta dialect: the GA Realtime API has no "
                    "session or response temperature (the GA session.update schema has no such "
                    "field); use dialect='beta' (or OpenAIRealtime.with_azure with a preview "
                    "api_version), or leave temperature unset"
                )
            if not 0.6 <= self.temperature <= 1.2:
                raise ConfigurationError("temperature must be within [0.6, 1.2]")
        mot = self.max_output_tokens
        if mot != "inf" and (
            not isinstance(mot, int) or isinstance(mot, bool) or not 1 <= mot <= 4096
        ):
            raise ConfigurationError("max_output_tokens must be 'inf' or an int in [1, 4096]")
        if self.speed is not None and not 0.25 <= self.speed <= 1.5:
            raise ConfigurationError("speed must be within [0.25, 1.5]")
        if self.noise_reduction not in (None, "near_field", "far_field"):
            raise ConfigurationError("noise_reduction must be None, 'near_field' or 'far_field'")
        td = self.turn_detection
        if isinstance(td, ServerVAD):
            if not 0.0 <= td.threshold <= 1.0:
                raise ConfigurationError("server_vad threshold must be within [0, 1]")
            if td.prefix_padding_ms < 0 or td.silence_duration_ms < 0:
                raise ConfigurationError("server_vad durations must not be negative")
        elif isinstance(td, SemanticVAD):
            if td.eagerness not in ("low", "medium", "high", "auto"):
                raise ConfigurationError(f"unknown semantic_vad eagerness {td.eagerness!r}")
        elif td is not None:
            raise ConfigurationError("turn_detection must be ServerVAD, SemanticVAD or None")
        if not self.tool_choice:
            raise ConfigurationError("tool_choice must be auto, none, required or a tool name")
        if self.max_session_duration is not None and self.max_session_duration <= 0:
            raise ConfigurationError("max_session_duration must be positive or None")
        timeouts = (self.request_timeout, self.connect_timeout, self.first_connect_timeout)
        if min(timeouts) <= 0:
            raise ConfigurationError("timeouts must be positive")
        for name in ("heartbeat_s", "reply_start_timeout", "reply_idle_timeout"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigurationError(f"{name} must be positive or None")
        if not 0.0 <= self.append_cadence_ms <= 60.0:
            raise ConfigurationError("append_cadence_ms must be within [0, 60]")
        if self.reconnect.max_attempts < 0 or self.reconnect.initial_delay < 0:
            raise ConfigurationError("reconnect policy values must not be negative")

    @property
    def input_rate(self) -> int:
        return format_rate(self.input_audio_format)

    @property
    def output_rate(self) -> int:
        return format_rate(self.output_audio_format)


# --- endpoints ---------------------------------------------------------------------------
def _ws_url(base_url: str, path_suffix: str, query: Mapping[str, str]) -> str:
    parts = urlsplit(base_url)
    scheme = {"https": "wss", "http": "ws", "wss": "wss", "ws": "ws"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ConfigurationError(f"base_url must be an http(s) or ws(s) URL, got {base_url!r}")
    path = parts.path.rstrip("/")
    if not path.endswith(path_suffix):
        path += path_suffix
    q = urlencode({**dict(_parse_query(parts.query)), **query})
    return urlunsplit((scheme, parts.netloc, path, q, ""))


def _parse_query(q: str) -> list[tuple[str, str]]:
    out = []
    for pair in q.split("&"):
        if pair:
            k, _, v = pair.partition("=")
            out.append((k, v))
    return out


def openai_endpoint(
    *,
    model: str,
    dialect: DialectName,
    base_url: str | None,
    api_key: str | None,
    env: Mapping[str, str] | None = None,
) -> Endpoint:
    """The OpenAI (or compatible) endpoint; a custom base_url may go without a key."""
    env = os.environ if env is None else env
    url_base = base_url or env.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
    key = api_key if api_key is not None else env.get("OPENAI_API_KEY")
    is_openai = urlsplit(url_base).hostname in ("api.openai.com",)
    if not key and is_openai:
        raise ConfigurationError(
            "no OpenAI API key: pass api_key= or set OPENAI_API_KEY "
            "(a custom base_url may go without)"
        )
    secret = {"Authorization": Secret(f"Bearer {key}")} if key else {}
    return Endpoint(
        url=_ws_url(url_base, "/realtime", {"model": model}),
        headers={"User-Agent": "duplex-agents"},
        secret_headers=secret,
        send_beta_header=dialect == "beta",
    )


def azure_endpoint(
    *,
    deployment: str | None,
    endpoint: str | None,
    api_version: str | None,
    api_key: str | None,
    entra_token: str | None,
    env: Mapping[str, str] | None = None,
    base_url: str | None = None,
) -> tuple[Endpoint, DialectName]:
    """Azure OpenAI: the GA ``/openai/v1`` path, or the legacy preview path when an
    ``api_version`` other than "v1" is given (which speaks the beta dialect).
    ``base_url`` is a full GA base (``.../openai/v1``) used as given."""
    env = os.environ if env is None else env
    endpoint = endpoint or (None if base_url else env.get("AZURE_OPENAI_ENDPOINT"))
    if not endpoint and not base_url:
        raise ConfigurationError(
            "no Azure endpoint: pass azure_endpoint= or set AZURE_OPENAI_ENDPOINT"
        )
    if not deployment:
        raise ConfigurationError("azure_deployment is required")
    if api_key and entra_token:
        raise ConfigurationError("pass either api_key or entra_token, not both")
    if not api_key and not entra_token:
        env_key, env_token = env.get("AZURE_OPENAI_API_KEY"), env.get("AZURE_OPENAI_AD_TOKEN")
        if env_key and env_token:
            raise ConfigurationError(
                "both AZURE_OPENAI_API_KEY and AZURE_OPENAI_AD_TOKEN are set; pass one explicitly"
            )
        api_key, entra_token = env_key, env_token
    if not api_key and not entra_token:
        raise ConfigurationError(
            "no Azure credentials: pass api_key= or entra_token=, or set AZURE_OPENAI_API_KEY "
            "or AZURE_OPENAI_AD_TOKEN"
        )
    version = api_version or env.get("OPENAI_API_VERSION")
    if base_url and version not in (None, "", "v1", "latest"):
        raise ConfigurationError("base_url selects the GA path; drop api_version (or use v1)")
    secret = (
        {"api-key": Secret(api_key)}
        if api_key
        else {"Authorization": Secret(f"Bearer {entra_token}")}
    )
    base = (endpoint or "").rstrip("/")
    if base_url:
        url = _ws_url(base_url, "/realtime", {"model": deployment})
        dialect: DialectName = "ga"
    elif version in (None, "", "v1", "latest"):
        url = _ws_url(base + "/openai/v1", "/realtime", {"model": deployment})
        dialect = "ga"
    else:
        assert version is not None
        url = _ws_url(
            base + "/openai", "/realtime", {"api-version": version, "deployment": deployment}
        )
        dialect = "beta"
    return (
        Endpoint(url=url, headers={"User-Agent": "duplex-agents"}, secret_headers=secret),
        dialect,
    )
