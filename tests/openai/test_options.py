"""Configuration: credentials, Azure, validation, capabilities, secrets kept out of logs."""

from __future__ import annotations

import logging

import pytest

from duplex.agents.conversation import Conversation
from duplex.agents.errors import ConfigurationError
from duplex.backends.openai import InputTranscription, OpenAIRealtime, SemanticVAD, ServerVAD

from .schema import validate
from .server import API_KEY, RealtimeTestServer

SECRET = "sk-live-SECRET-should-never-print"


def test_missing_openai_key_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        OpenAIRealtime(env={})


def test_key_and_base_url_from_the_environment() -> None:
    b = OpenAIRealtime(env={"OPENAI_API_KEY": SECRET, "OPENAI_BASE_URL": "https://example.test/v1"})
    assert b.endpoint.url == "wss://example.test/v1/realtime?model=gpt-realtime"
    assert b.endpoint.all_headers()["Authorization"] == f"Bearer {SECRET}"


def test_a_compatible_server_may_go_without_a_key() -> None:
    b = OpenAIRealtime(base_url="http://127.0.0.1:8000/v1", env={})
    assert "Authorization" not in b.endpoint.all_headers()
    assert b.endpoint.url == "ws://127.0.0.1:8000/v1/realtime?model=gpt-realtime"


def test_the_key_never_appears_in_reprs() -> None:
    b = OpenAIRealtime(api_key=SECRET, env={})
    for text in (repr(b), str(b), repr(b.endpoint), repr(b.options), str(b.endpoint)):
        assert SECRET not in text


async def test_the_key_never_reaches_the_logs(
    server: RealtimeTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.api_key = SECRET
    b = OpenAIRealtime(base_url=server.base_url, api_key=SECRET, env={})
    session = await b.connect(instructions="x", tools=[], conversation=Conversation())
    await server.current.close()  # a drop logs a reconnect
    await session.aclose()
    assert caplog.records and SECRET not in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"temperature": 0.8}, "beta"),
        ({"temperature": 2.0, "dialect": "beta"}, "temperature"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"max_output_tokens": 10_000}, "max_output_tokens"),
        ({"speed": 3.0}, "speed"),
        ({"modality": "video"}, "modality"),
        ({"input_audio_format": "mp3"}, "input_audio_format"),
        ({"dialect": "v2"}, "dialect"),
        ({"response_policy": "whatever"}, "response_policy"),
        ({"turn_detection": ServerVAD(threshold=1.5)}, "threshold"),
        ({"turn_detection": SemanticVAD(eagerness="eager")}, "eagerness"),  # type: ignore[arg-type]
        ({"noise_reduction": "studio"}, "noise_reduction"),
        ({"max_session_duration": 0}, "max_session_duration"),
    ],
)
def test_bad_options_fail_before_any_connection(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        OpenAIRealtime(api_key="k", env={}, **kwargs)  # type: ignore[arg-type]


def test_capabilities_follow_the_options() -> None:
    caps = OpenAIRealtime(api_key="k", env={}).capabilities
    assert caps.server_vad and caps.server_interrupts and caps.user_transcription
    assert (caps.input_sample_rate, caps.output_sample_rate) == (24000, 24000)
    assert caps.truncation and not caps.auto_tool_reply
    local = OpenAIRealtime(
        api_key="k",
        env={},
        turn_detection=None,
        input_transcription=None,
        input_audio_format="g711_ulaw",
        output_audio_format="g711_alaw",
    ).capabilities
    assert not local.server_vad and not local.server_interrupts and not local.user_transcription
    assert (local.input_sample_rate, local.output_sample_rate) == (8000, 8000)
    assert not OpenAIRealtime(
        api_key="k", env={}, turn_detection=SemanticVAD(interrupt_response=False)
    ).capabilities.server_interrupts


# --- Azure ---------------------------------------------------------------------------------
def test_azure_needs_credentials_and_refuses_two() -> None:
    with pytest.raises(ConfigurationError, match="Azure credentials"):
        OpenAIRealtime.with_azure(azure_deployment="d", azure_endpoint="https://x", env={})
    with pytest.raises(ConfigurationError, match="not both"):
        OpenAIRealtime.with_azure(
            azure_deployment="d", azure_endpoint="https://x", api_key="k", entra_token="t", env={}
        )
    with pytest.raises(ConfigurationError, match="AZURE_OPENAI_AD_TOKEN"):
        OpenAIRealtime.with_azure(
            azure_deployment="d",
            env={
                "AZURE_OPENAI_ENDPOINT": "https://x",
                "AZURE_OPENAI_API_KEY": "k",
                "AZURE_OPENAI_AD_TOKEN": "t",
            },
        )
    with pytest.raises(ConfigurationError, match="AZURE_OPENAI_ENDPOINT"):
        OpenAIRealtime.with_azure(azure_deployment="d", api_key="k", env={})


def test_azure_reads_the_environment() -> None:
    b = OpenAIRealtime.with_azure(
        azure_deployment="rt",
        env={
            "AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com",
            "AZURE_OPENAI_AD_TOKEN": "entra-token",
            "OPENAI_API_VERSION": "2024-10-01-preview",
        },
    )
    assert b.endpoint.url == (
        "wss://res.openai.azure.com/openai/realtime?api-version=2024-10-01-preview&deployment=rt"
    )
    assert b.options.dialect == "beta"
    assert b.endpoint.all_headers()["Authorization"] == "Bearer entra-token"
    assert "entra-token" not in repr(b)


@pytest.mark.parametrize("api_version", [None, "2024-10-01-preview"])
async def test_azure_against_the_test_server(
    server: RealtimeTestServer, api_version: str | None
) -> None:
    b = OpenAIRealtime.with_azure(
        azure_deployment="my-realtime",
        azure_endpoint=f"http://127.0.0.1:{server.port}",
        api_version=api_version,
        api_key=API_KEY,
        env={},
    )
    session = await b.connect(instructions="hi", tools=[], conversation=Conversation())
    hs = server.handshakes[-1]
    assert hs["headers"]["api-key"] == API_KEY and "Authorization" not in hs["headers"]
    if api_version is None:
        assert (hs["path"], hs["query"]) == ("/openai/v1/realtime", {"model": "my-realtime"})
        assert server.current.dialect == "ga"
    else:
        assert hs["path"] == "/openai/realtime"
        assert hs["query"] == {"api-version": api_version, "deployment": "my-realtime"}
        assert server.current.dialect == "beta"
        assert "modalities" in server.of_type("session.update")[0]["session"]  # flat session
    await session.aclose()


# --- session.update shapes -----------------------------------------------------------------
@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_every_option_reaches_session_update(dialect: str) -> None:
    from duplex.agents.tools import function_tool

    @function_tool
    def lookup(city: str) -> str:
        """Look a city up. city: its name."""
        return city

    from duplex.agents.tools import build_tool

    b = OpenAIRealtime(
        api_key="k",
        env={},
        dialect=dialect,  # type: ignore[arg-type]
        voice="cedar",
        input_audio_format="g711_ulaw",
        output_audio_format="g711_alaw",
        input_transcription=InputTranscription("whisper-1", language="fr", prompt="Paris"),
        turn_detection=SemanticVAD(eagerness="high", create_response=False),
        noise_reduction="far_field",
        tool_choice="lookup",
        max_output_tokens=512,
        speed=1.2,
        temperature=0.7 if dialect == "beta" else None,
    )
    from duplex.backends.openai.dialect import dialect_for

    session = dialect_for(b.options.dialect).session(b.options, "Be kind.", [build_tool(lookup)])
    validate({"type": "session.update", "session": session}, dialect=dialect, side="client")  # type: ignore[arg-type]
    flat = str(session)
    for needle in (
        "cedar",
        "whisper-1",
        "'fr'",
        "Paris",
        "semantic_vad",
        "high",
        "far_field",
        "lookup",
        "512",
        "1.2",
    ):
        assert needle in flat, needle
    if dialect == "ga":
        assert session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
        assert session["audio"]["output"]["format"] == {"type": "audio/pcma"}
        assert session["tool_choice"] == {"type": "function", "name": "lookup"}
        assert session["output_modalities"] == ["audio"]
    else:
        assert (session["input_audio_format"], session["output_audio_format"]) == (
            "g711_ulaw",
            "g711_alaw",
        )
        assert session["temperature"] == 0.7 and session["max_response_output_tokens"] == 512
