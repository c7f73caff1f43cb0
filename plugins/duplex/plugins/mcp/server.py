"""MCP servers a session starts, lists, calls and stops: `MCPServerStdio` and `MCPServerHTTP`.

The SDK's `Client` is an anyio context that must be entered and left by one task, so each
server runs in a task of its own that holds the connection for the whole call; tool calls
from the session's tasks go through it and end with an error (never a hang) when the
server dies under them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sys
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import mcp
import mcp.types
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ListenNotSupportedError
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from duplex.agents.errors import ToolProviderError
from duplex.agents.tool_provider import ToolProvider
from duplex.agents.tools import FunctionTool

from .tool import MCPTool, MCPToolError, result_text

logger = logging.getLogger("duplex.plugins.mcp")

_BAD_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_-]")


class MCPServer(ToolProvider):
    """One MCP server for the length of one session."""

    def __init__(
        self,
        *,
        name: str,
        timeout: float | None = 30.0,
        connect_timeout: float = 15.0,
        tool_prefix: str = "",
        allowed_tools: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        #: Per call; a call still running then ends with a timeout output.
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.tool_prefix = tool_prefix
        self.allowed_tools = set(allowed_tools) if allowed_tools is not None else None
        self._client: mcp.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._down = asyncio.Event()
        self._tools: list[FunctionTool] = []
        self._relisting = asyncio.Lock()

    @abstractmethod
    def _transport(self) -> Any:
        """What `mcp.Client` connects through (a stdio process, a streamable HTTP URL)."""

    @property
    def running(self) -> bool:
        return self._client is not None and not self._down.is_set()

    async def start(self) -> list[FunctionTool]:
        if self._task is not None:
            raise ToolProviderError(f"MCP server {self.name!r} was already started")
        ready: asyncio.Future[list[FunctionTool]] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._hold(ready), name=f"duplex-mcp-{self.name}")
        try:
            return await asyncio.wait_for(asyncio.shield(ready), self.connect_timeout)
        except asyncio.TimeoutError:
            await self.aclose()
            raise ToolProviderError(
                f"MCP server {self.name!r} did not answer within {self.connect_timeout:g} s"
            ) from None
        except ToolProviderError:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        self._stop.set()
        task, self._task = self._task, None
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), 5.0)
            except (asyncio.TimeoutError, Exception):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    # connection ------------------------------------------------------------------------
    async def _hold(self, ready: asyncio.Future[list[FunctionTool]]) -> None:
        listener: asyncio.Task[None] | None = None
        try:
            async with mcp.Client(
                self._transport(), message_handler=self._on_message, raise_exceptions=False
            ) as client:
                self._client = client
                tools = await self._list(client)
                if not ready.done():
                    ready.set_result(tools)
                listener = asyncio.create_task(self._listen(client))
                await self._stop.wait()
                listener.cancel()
                with contextlib.suppress(BaseException):
                    await listener
        except Exception as e:
            reason = _describe(e)
            if not ready.done():
                ready.set_exception(
                    ToolProviderError(f"MCP server {self.name!r} could not start: {reason}")
                )
            elif not self._stop.is_set():
                logger.error("MCP server %r stopped: %s", self.name, reason)
        finally:
            if listener is not None and not listener.done():
                listener.cancel()
            self._client = None
            self._down.set()
            if not ready.done():
                ready.set_exception(ToolProviderError(f"MCP server {self.name!r} closed"))

    async def _list(self, client: mcp.Client) -> list[FunctionTool]:
        tools: list[FunctionTool] = []
        cursor: str | None = None
        for _ in range(100):  # a paginator that never ends must not hang the call's start
            page = await client.list_tools(cursor=cursor)
            for t in page.tools:
                if self.allowed_tools is not None and t.name not in self.allowed_tools:
                    continue
                tools.append(self._as_tool(t))
            cursor = page.next_cursor
            if not cursor:
                break
        self._tools = tools
        return list(tools)

    async def _listen(self, client: mcp.Client) -> None:
        """Newer protocol versions only report changes on a subscription."""
        try:
            async with client.listen(tools_list_changed=True) as sub:
                async for _event in sub:
                    await self._relist()
        except ListenNotSupportedError:
            return  # older servers notify through `_on_message`
        except Exception as e:
            logger.debug("MCP server %r: no change subscription (%s)", self.name, _describe(e))

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, mcp.types.ToolListChangedNotification):
            await self._relist()

    async def _relist(self) -> None:
        client = self._client
        if client is None:
            return
        async with self._relisting:
            before = _signature(self._tools)
            try:
                tools = await self._list(client)
            except Exception as e:
                logger.warning("MCP server %r: listing changed tools failed: %s", self.name, e)
                return
            if _signature(tools) != before:  # a subscription and a notification may both say so
                await self.tools_changed(tools)

    # tools -----------------------------------------------------------------------------
    def _as_tool(self, tool: mcp.types.Tool) -> MCPTool:
        remote = tool.name
        local = _BAD_NAME_CHARS.sub("_", f"{self.tool_prefix}{remote}")[:64]

        async def call(**arguments: Any) -> str:
            return await self._call(remote, arguments)

        return MCPTool.create(
            name=local,
            description=tool.description or "",
            input_schema=tool.input_schema,
            call=call,
            server=self.name,
            timeout=self.timeout,
        )

    async def _call(self, name: str, arguments: dict[str, Any]) -> str:
        client = self._client
        if client is None or self._down.is_set():
            raise ToolProviderError(f"MCP server {self.name!r} is not running")
        call = asyncio.ensure_future(client.call_tool(name, arguments))
        down = asyncio.ensure_future(self._down.wait())
        try:
            await asyncio.wait({call, down}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            down.cancel()
            if not call.done():
                call.cancel()
                with contextlib.suppress(BaseException):
                    await call
        if call.cancelled() or not call.done():
            raise ToolProviderError(f"MCP server {self.name!r} stopped during the call")
        try:
            result = call.result()
        except MCPError as e:
            if e.error.code == mcp.types.CONNECTION_CLOSED:
                # The process died or the link broke: later calls fail fast instead of hanging.
                self._down.set()
                self._stop.set()
                raise ToolProviderError(
                    f"MCP server {self.name!r} stopped during the call"
                ) from None
            raise MCPToolError(f"{self.name}: {e.error.message}") from None
        except Exception as e:
            raise ToolProviderError(
                f"MCP server {self.name!r} failed the call: {_describe(e)}"
            ) from None
        text = result_text(list(result.content), result.structured_content)
        if result.is_error:
            raise MCPToolError(text or f"{name} failed")
        return text


class MCPServerStdio(MCPServer):
    """A server the session spawns as a subprocess and talks to over stdin/stdout."""

    def __init__(
        self,
        command: str,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        name: str | None = None,
        errlog: TextIO | None = None,
        **options: Any,
    ) -> None:
        super().__init__(name=name or command.rsplit("/", 1)[-1], **options)
        self._params = StdioServerParameters(
            command=command, args=list(args), env=dict(env) if env else None, cwd=cwd
        )
        self._errlog = errlog

    def _transport(self) -> Any:
        return stdio_client(self._params, errlog=self._errlog or sys.stderr)


class MCPServerHTTP(MCPServer):
    """A running server reached over streamable HTTP (``http://host:port/mcp``)."""

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        name: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(name=name or _safe_url(url), **options)
        self.url = url
        self._headers = dict(headers or {})

    def _transport(self) -> Any:
        client = create_mcp_http_client(headers=self._headers) if self._headers else None
        return streamable_http_client(self.url, http_client=client)


def _signature(tools: Sequence[FunctionTool]) -> list[tuple[str, str, str]]:
    return [(t.name, t.description, repr(t.parameters)) for t in tools]


def _describe(e: BaseException) -> str:
    """The innermost readable reason: anyio wraps failures in exception groups."""
    inner = getattr(e, "exceptions", None)  # an exception group (no builtin name on 3.10)
    while inner:
        e = inner[0]
        inner = getattr(e, "exceptions", None)
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _safe_url(url: str) -> str:
    """The URL without credentials, for names and logs."""
    return re.sub(r"//[^/@]*@", "//", url)
