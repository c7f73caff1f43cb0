"""`ChatCompletionsLLM`: any OpenAI-compatible ``/v1/chat/completions`` server, streamed.

vLLM, OpenAI, llama.cpp's server and Ollama all speak it, with small differences in
which fields are null or missing; everything here is read defensively.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from duplex.agents.backend import ToolChoice, Usage
from duplex.agents.stages import LLM, LLMChunk, TextChunk, ToolCallChunk, UsageChunk

from .errors import LLMError
from .messages import chat_tool_choice
from .sse import iter_sse_data

logger = logging.getLogger(__name__)


def api_root(url: str) -> str:
    """``http://host:8000`` and ``http://host:8000/v1`` both mean the same server."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


@dataclass
class _PartialCall:
    call_id: str | None = None
    name: str = ""
    arguments: str = ""


class _ToolCallAssembler:
    """Tool-call deltas come as fragments keyed by ``index``: id and name first, then arguments."""

    def __init__(self) -> None:
        self.calls: dict[int, _PartialCall] = {}

    def add(self, delta: dict[str, Any]) -> None:
        index = delta.get("index")
        call_id = delta.get("id") or None
        if not isinstance(index, int):
            # Some servers omit the index and send whole calls: key them by id, else append.
            index = next(
                (i for i, c in self.calls.items() if call_id and c.call_id == call_id),
                len(self.calls),
            )
        call = self.calls.setdefault(index, _PartialCall())
        if call_id:
            call.call_id = call_id
        fn = delta.get("function") or {}
        name = fn.get("name")
        if isinstance(name, str) and name:
            call.name = name
        args = fn.get("arguments")
        if isinstance(args, str):
            call.arguments += args
        elif isinstance(args, dict):
            call.arguments += json.dumps(args)

    def complete(self) -> list[ToolCallChunk]:
        out: list[ToolCallChunk] = []
        for index in sorted(self.calls):
            c = self.calls[index]
            if not c.name:
                raise LLMError(f"tool call #{index} has no function name", code="llm_bad_tool_call")
            out.append(
                ToolCallChunk(
                    call_id=c.call_id or f"call_{uuid.uuid4().hex[:24]}",
                    name=c.name,
                    arguments=c.arguments or "{}",
                )
            )
        self.calls.clear()
        return out


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    prompt = int(raw.get("prompt_tokens") or 0)
    completion = int(raw.get("completion_tokens") or 0)
    cached = int(((raw.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0)
    return Usage(
        input_tokens=prompt,
        output_tokens=completion,
        input_text_tokens=prompt,
        input_cached_tokens=cached,
        output_text_tokens=completion,
    )


def _error_message(body: Any) -> tuple[str | None, str]:
    """(code, message) of an error body in OpenAI's nested or vLLM's flat shape."""
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            code = err.get("code") or err.get("type")
            return (str(code) if code is not None else None), str(err.get("message") or err)
        return None, str(err)
    return None, str(body)


class ChatCompletionsLLM(LLM):
    """Streams replies with tools from ``{base_url}/chat/completions`` over SSE.

    ``api_key`` is optional (local servers need none) and is never logged.
    ``extra_body`` is merged into every request (e.g. ``{"top_k": 20}`` for vLLM).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        extra_body: dict[str, Any] | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> None:
        self.url = api_root(base_url) + "/chat/completions"
        self.model = model
        self._api_key = api_key
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.extra_body = dict(extra_body or {})
        self.timeout = timeout or aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=120)
        self._http: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"ChatCompletionsLLM(url={self.url!r}, model={self.model!r})"

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=self.timeout)
        return self._http

    def request_body(
        self,
        messages: Sequence[dict[str, Any]],
        tools: Sequence[dict[str, Any]],
        tool_choice: ToolChoice | None,
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> dict[str, Any]:
        """The request body; ``temperature``/``max_tokens`` override the stage's defaults."""
        temperature = self.temperature if temperature is None else temperature
        max_tokens = self.max_tokens if max_tokens is None else max_tokens
        body: dict[str, Any] = {
            "model": self.model,
            "messages": list(messages),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if tools:
            body["tools"] = list(tools)
            if tool_choice is not None:
                body["tool_choice"] = chat_tool_choice(tool_choice)
        if temperature is not None:
            body["temperature"] = temperature
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        body.update(self.extra_body)
        return body

    async def stream(
        self,
        messages: Sequence[dict[str, Any]],
        *,
        tools: Sequence[dict[str, Any]] = (),
        tool_choice: ToolChoice | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> AsyncIterator[LLMChunk]:
        headers = {"Accept": "text/event-stream"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        body = self.request_body(
            messages, tools, tool_choice, temperature=temperature, max_tokens=max_tokens
        )
        calls = _ToolCallAssembler()
        finished = False
        try:
            async with self._session().post(self.url, json=body, headers=headers) as resp:
                if resp.status != 200:
                    raw = (await resp.content.read(4096)).decode("utf-8", errors="replace")
                    try:
                        code, message = _error_message(json.loads(raw))
                    except ValueError:
                        code, message = None, raw.strip() or resp.reason or ""
                    raise LLMError(
                        f"chat completions answered HTTP {resp.status}: {message}",
                        code=code or f"http_{resp.status}",
                        recoverable=resp.status >= 500 or resp.status == 429,
                    )
                try:
                    async for data in iter_sse_data(resp.content):
                        if data.strip() == "[DONE]":
                            finished = True
                            break
                        for chunk in self._parse(data, calls):
                            if chunk is None:
                                finished = True
                                continue
                            yield chunk
                finally:
                    if not finished:
                        resp.close()  # drop the socket so the server stops generating
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError) as e:
            if finished:
                return
            where = " mid-tool-call" if calls.calls else ""
            raise LLMError(
                f"chat completions stream broke{where}: {type(e).__name__}: {e}",
                code="llm_stream_cut",
            ) from e
        if not finished:
            where = " mid-tool-call" if calls.calls else ""
            raise LLMError(
                f"chat completions stream ended{where} before the reply finished",
                code="llm_stream_cut",
            )

    def _parse(self, data: str, calls: _ToolCallAssembler) -> list[LLMChunk | None]:
        """Chunks from one SSE event; None marks a finish_reason (the reply is complete)."""
        try:
            obj = json.loads(data)
        except ValueError:
            raise LLMError(
                f"chat completions sent invalid JSON: {data[:200]!r}", code="llm_bad_chunk"
            ) from None
        if not isinstance(obj, dict):
            raise LLMError(
                f"chat completions sent a non-object chunk: {data[:200]!r}", code="llm_bad_chunk"
            )
        if "error" in obj or obj.get("object") == "error":
            code, message = _error_message(obj)
            raise LLMError(
                f"chat completions failed mid-stream: {message}", code=code or "llm_error"
            )
        out: list[LLMChunk | None] = []
        for choice in obj.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str) and content:
                out.append(TextChunk(content))
            for tc in delta.get("tool_calls") or ():
                if isinstance(tc, dict):
                    calls.add(tc)
            if choice.get("finish_reason"):
                out.extend(calls.complete())
                out.append(None)
        usage = _usage(obj.get("usage"))
        if usage is not None:
            out.append(UsageChunk(usage))
        return out

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
