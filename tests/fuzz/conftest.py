"""The fuzz suites reuse the protocol servers (and their fixtures) of the backend tests."""

from __future__ import annotations

from ..cascade.conftest import transcriber, vllm_server
from ..openai.conftest import server

__all__ = ["server", "transcriber", "vllm_server"]
