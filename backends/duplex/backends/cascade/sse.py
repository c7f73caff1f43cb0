"""A minimal Server-Sent Events reader over an aiohttp response body.

No SSE client fits: the aiohttp ones implement a reconnecting EventSource, which is
wrong for a POSTed completion (a retry would generate a second reply), and httpx-sse
needs httpx. A completion stream only needs the ``data`` field, so this stays tiny.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp


async def iter_sse_data(content: aiohttp.StreamReader) -> AsyncIterator[str]:
    """The ``data`` of each event, multi-line data joined with newlines (per the SSE spec)."""
    data: list[str] = []
    async for raw in content:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue  # comment / keep-alive
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            data.append(value)
    # An event not closed by a blank line is discarded (the spec's rule): it may be cut.
