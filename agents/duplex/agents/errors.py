"""Typed errors: every failure a caller can act on has its own class."""

from __future__ import annotations


class DuplexError(Exception):
    """Base class of every error this framework raises on purpose."""


class AudioFormatError(DuplexError, ValueError):
    """Audio of the wrong type, rate, shape or size; the frame is refused, nothing else changes."""


class ToolError(DuplexError):
    """Raise from a tool to give the model a message instead of a traceback."""


class ToolArgumentsError(DuplexError, ValueError):
    """The model called a tool with arguments that do not fit its schema."""


class ToolDefinitionError(DuplexError, TypeError):
    """A function cannot become a tool (unsupported type hint, missing annotation)."""


class ToolProviderError(DuplexError):
    """A tool provider (an MCP server) could not start, or stopped while a call needed it."""


class BackendErrorException(DuplexError):
    """A backend refused a request; ``code`` is the backend's own code."""

    def __init__(
        self,
        message: str,
        *,
        code: str = "backend_error",
        recoverable: bool = True,
        param: str | None = None,
        event_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.recoverable = recoverable
        #: The request field the backend objected to, and the client event it answers.
        self.param = param
        self.event_id = event_id


class ResponseActiveError(DuplexError):
    """A reply was requested while another one is active and the policy refuses it."""


class SessionClosedError(DuplexError):
    """The session or backend connection is closed."""


class ConfigurationError(DuplexError, ValueError):
    """Missing or conflicting configuration, raised before any connection is made."""
