"""A minimal Server-Sent Events reader over an aiohttp response body, bounded in time and size.

No SSE client fits: the aiohttp ones implement a reconnecting EventSource, which is
wrong for a POSTed completion (a retry would generate a second reply), and httpx-sse
needs httpx. A completion stream only needs the ``data`` field, so this stays tiny.

Two bounds a hostile or broken server cannot get around: each event must complete
within ``event_timeout_s`` (a server trickling one byte a second, or one that went
silent, is caught; comments do not count as progress), and no line or event may grow
past ``max_event_bytes``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp

__all__ = ["MAX_EVENT_BYTES", "SSEError", "SSETimeoutError", "SSETooLargeError", "iter_sse_data"]

#: Largest event (all its data lines together) or single line accepted, in bytes.
MAX_EVENT_BYTES = 512 * 1024


class SSEError(ValueError):
    """The event stream broke a rule of the reader (too slow, too large)."""


class SSETimeoutError(SSEError):
    """No complete event arrived within the event timeout."""


class SSETooLargeError(SSEError):
    """A line or an event outgrew ``max_event_bytes``."""


async def iter_sse_data(
    content: aiohttp.StreamReader,
    *,
    event_timeout_s: float | None = None,
    max_event_bytes: int = MAX_EVENT_BYTES,
) -> AsyncIterator[str]:
    """The ``data`` of each event, multi-line data joined with newlines (per the SSE spec)."""
    loop = asyncio.get_running_loop()
    buffer = bytearray()
    data: list[bytes] = []
    size = 0
    deadline = None if event_timeout_s is None else loop.time() + event_timeout_s
    while True:
        newline = buffer.find(b"\n")
        if newline < 0:
            if len(buffer) > max_event_bytes:
                raise SSETooLargeError(f"an event line is longer than {max_event_bytes} bytes")
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                async with asyncio.timeout(remaining):
                    chunk = await content.readany()
            except TimeoutError:
                raise SSETimeoutError(f"no complete event within {event_timeout_s:g} s") from None
            if not chunk:
                return  # an event not closed by a blank line is discarded: it may be cut
            buffer += chunk
            continue
        raw = bytes(buffer[:newline])
        del buffer[: newline + 1]
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if not line:
            if data:
                yield b"\n".join(data).decode("utf-8", errors="replace")
                data, size = [], 0
                if event_timeout_s is not None:
                    deadline = loop.time() + event_timeout_s
            continue
        if line.startswith(b":"):
            continue  # comment / keep-alive (not progress: the deadline stands)
        field, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            size += len(value) + 1
            if size > max_event_bytes:
                raise SSETooLargeError(f"an event is larger than {max_event_bytes} bytes")
            data.append(value)
