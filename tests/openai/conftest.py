"""Fixtures: a fresh OpenAI-protocol test server per test, checked for schema violations."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .server import RealtimeTestServer


@pytest.fixture
async def server() -> AsyncIterator[RealtimeTestServer]:
    srv = RealtimeTestServer()
    await srv.start()
    yield srv
    await srv.close()
    assert not srv.schema_errors, "\n".join(srv.schema_errors)
