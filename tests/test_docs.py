"""Every Python block in the README and the docs is a complete program, and runs.

Blocks run in order, one file at a time, in a scratch folder; a block whose first
line is ``# name.py`` is saved under that name first (later blocks import it, as a
reader would). Programs that talk to OpenAI get the protocol-exact test server
(``OPENAI_BASE_URL``); the console transport gets a typed line. Docs that other
pages own (backends, architecture, performance, security) are compiled only.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import logging
import re
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from duplex.agents.wav import write_wav
from tests.openai.server import API_KEY, RealtimeTestServer
from tests.openai.server import Reply as ServerReply
from tests.speech import speak

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
#: Pages whose programs are run as ``__main__`` (the rest define, and run their tests).
RUN_MAIN = {"README.md", "docs/index.md", "docs/quickstart.md", "docs/observability.md"}
COMPILE_ONLY = ("docs/backends/", "docs/architecture.md", "docs/performance.md", "docs/security.md")


def _pages() -> list[str]:
    docs = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md"))
    pages = ["README.md", *docs]
    return [p for p in pages if BLOCK.search((ROOT / p).read_text())]


def blocks(page: str) -> list[str]:
    return BLOCK.findall((ROOT / page).read_text())


@pytest.fixture(scope="module")
def openai_server() -> Iterator[RealtimeTestServer]:
    """The OpenAI Realtime test server on its own loop and thread (blocks call asyncio.run)."""
    loop = asyncio.new_event_loop()
    server = RealtimeTestServer()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(30)
    yield server
    asyncio.run_coroutine_threadsafe(server.close(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(30)


@pytest.fixture
def keep_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("page", _pages())
def test_code_blocks_run(
    page: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    openai_server: RealtimeTestServer,
    keep_logging: None,
) -> None:
    found = blocks(page)
    if page.startswith(COMPILE_ONLY):
        for i, code in enumerate(found):
            compile(code, f"{page}#{i}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        return
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "app", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    openai_server.replies.append(ServerReply(text="We open at nine."))
    write_wav(tmp_path / "question.wav", speak("What is the weather in Oslo?", 16000))

    async def typed() -> AsyncIterator[str]:
        yield "When do you open?\n"  # then end of input: the text chat ends after the answer

    monkeypatch.setattr("duplex.plugins.console.transport.stdin_lines", typed)
    ran_main = False
    for i, code in enumerate(found):
        first = code.splitlines()[0] if code.strip() else ""
        named = re.fullmatch(r"# (\w+\.py)\b.*", first)
        if named:
            (tmp_path / named.group(1)).write_text(code)
        as_main = page in RUN_MAIN and not named
        ran_main |= as_main and "asyncio.run(" in code
        namespace: dict[str, object] = {"__name__": "__main__" if as_main else "__docs__"}
        exec(compile(code, f"{page}#{i}", "exec"), namespace)
        for name, fn in list(namespace.items()):
            if name.startswith("test_") and inspect.iscoroutinefunction(fn):
                asyncio.run(fn())
    out = capsys.readouterr().out
    if page in ("README.md", "docs/index.md", "docs/quickstart.md"):
        assert ran_main and "agent: We open at nine." in out  # the OpenAI variant answered
