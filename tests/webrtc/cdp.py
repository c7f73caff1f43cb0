"""A small Chrome DevTools Protocol client over aiohttp, to drive Debian's headless Chromium.

Why not playwright: its browser download is impossible here and playwright-core
needs node; CDP is a JSON-over-WebSocket protocol that aiohttp (already a core
dependency) speaks in a hundred lines, and we use five methods of it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--mute-audio",
    "--autoplay-policy=no-user-gesture-required",
    "--remote-debugging-port=0",
    # A loopback ICE candidate, so the call can stay on 127.0.0.1 (see tests/webrtc/loopback.py).
    "--allow-loopback-in-peer-connection",
]


class CDPError(RuntimeError):
    pass


@dataclass
class Page:
    browser: Browser
    session_id: str
    target_id: str
    console: list[str] = field(default_factory=list)

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.browser.send(method, params, session_id=self.session_id)

    async def evaluate(self, expression: str, *, timeout: float = 20.0) -> Any:
        """Run JS in the page (awaiting a returned promise); raises `CDPError` on a JS error."""
        res = await asyncio.wait_for(
            self.send(
                "Runtime.evaluate",
                {"expression": expression, "awaitPromise": True, "returnByValue": True},
            ),
            timeout,
        )
        if "exceptionDetails" in res:
            details = res["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CDPError(
                f"JS error in {expression[:80]!r}: {text}\nconsole: {self.console[-10:]}"
            )
        return res["result"].get("value")

    async def goto(self, url: str, *, timeout: float = 20.0) -> None:
        loaded = self.browser.expect("Page.loadEventFired", self.session_id)
        await self.send("Page.navigate", {"url": url})
        await asyncio.wait_for(loaded, timeout)

    async def screenshot(self) -> bytes:
        """The page as PNG bytes."""
        res = await self.send("Page.captureScreenshot", {"format": "png"})
        return base64.b64decode(res["data"])

    async def crash(self) -> None:
        """Kill the renderer: the page's peer connection vanishes without a goodbye."""
        crashed = self.browser.expect("Inspector.targetCrashed", self.session_id)
        # Page.crash never answers: the renderer is gone before it could.
        self.browser.send_nowait("Page.crash", session_id=self.session_id)
        await asyncio.wait_for(crashed, 10)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.browser.send("Target.closeTarget", {"targetId": self.target_id})


class Browser:
    """One headless Chromium process with its own profile, driven over CDP."""

    def __init__(self, proc: asyncio.subprocess.Process, profile: str) -> None:
        self.proc = proc
        self.profile = profile
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._calls: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._waits: list[tuple[str, str | None, asyncio.Future[dict[str, Any]]]] = []
        self._pages: dict[str, Page] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.stderr: list[str] = []

    @classmethod
    async def launch(cls, *, fake_audio: Path | None = None, timeout: float = 30.0) -> Browser:
        if CHROMIUM is None:
            raise CDPError("chromium is not installed (apt-get install chromium)")
        profile = tempfile.mkdtemp(prefix="duplex-chromium-")
        args = [*FLAGS, f"--user-data-dir={profile}"]
        if fake_audio is not None:
            # %noloop: play the file once, then silence (the default loops it forever).
            args.append(f"--use-file-for-fake-audio-capture={fake_audio}%noloop")
        proc = await asyncio.create_subprocess_exec(
            CHROMIUM,
            *args,
            "about:blank",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        browser = cls(proc, profile)
        try:
            url = await asyncio.wait_for(browser._devtools_url(), timeout)
            browser._http = aiohttp.ClientSession()
            browser._ws = await browser._http.ws_connect(url, max_msg_size=0)
            browser._tasks.add(asyncio.create_task(browser._read()))
        except BaseException:
            await browser.close()
            raise
        return browser

    async def _devtools_url(self) -> str:
        assert self.proc.stderr is not None
        while True:
            line = (await self.proc.stderr.readline()).decode(errors="replace")
            if not line:
                raise CDPError(f"chromium exited: {''.join(self.stderr[-20:])}")
            self.stderr.append(line)
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            if m:
                # Keep draining stderr, or chromium blocks once the pipe is full.
                self._tasks.add(asyncio.create_task(self._drain()))
                return m.group(1)

    async def _drain(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.stderr.append(line.decode(errors="replace"))
            del self.stderr[:-200]

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if "id" in data:
                fut = self._calls.pop(data["id"], None)
                if fut is not None and not fut.done():
                    if "error" in data:
                        fut.set_exception(CDPError(f"{data['error']}"))
                    else:
                        fut.set_result(data.get("result", {}))
                continue
            self._dispatch(data)
        for fut in self._calls.values():
            if not fut.done():
                fut.set_exception(CDPError("browser connection closed"))
                # A call abandoned at shutdown has no one awaiting it: do not warn about it.
                fut.add_done_callback(lambda f: f.exception())

    def _dispatch(self, data: dict[str, Any]) -> None:
        method, sid = data.get("method", ""), data.get("sessionId")
        page = self._pages.get(sid or "")
        if page is not None and method == "Runtime.consoleAPICalled":
            args = data["params"].get("args", [])
            page.console.append(" ".join(str(a.get("value", a.get("description"))) for a in args))
        if page is not None and method == "Runtime.exceptionThrown":
            page.console.append(str(data["params"]["exceptionDetails"].get("text")))
        for wait in list(self._waits):
            name, want_sid, fut = wait
            if name == method and (want_sid is None or want_sid == sid) and not fut.done():
                fut.set_result(data.get("params", {}))
                self._waits.remove(wait)

    def expect(self, method: str, session_id: str | None = None) -> asyncio.Future[dict[str, Any]]:
        """A future for the next event ``method``; create it before triggering the event."""
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waits.append((method, session_id, fut))
        return fut

    def send_nowait(
        self, method: str, params: dict[str, Any] | None = None, *, session_id: str | None = None
    ) -> asyncio.Future[dict[str, Any]]:
        assert self._ws is not None
        msg_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._calls[msg_id] = fut
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session_id is not None:
            msg["sessionId"] = session_id
        sending = asyncio.create_task(self._ws.send_str(json.dumps(msg)))
        self._tasks.add(sending)
        sending.add_done_callback(self._tasks.discard)
        return fut

    async def send(
        self, method: str, params: dict[str, Any] | None = None, *, session_id: str | None = None
    ) -> dict[str, Any]:
        return await asyncio.wait_for(self.send_nowait(method, params, session_id=session_id), 30)

    async def new_page(self, url: str, *, width: int = 1280, height: int = 860) -> Page:
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self, attached["sessionId"], target["targetId"])
        self._pages[page.session_id] = page
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        await page.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        await page.goto(url)
        return page

    async def close(self) -> None:
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.send("Browser.close"), 5)
        if self.proc.returncode is None:
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()
        if self._http is not None:
            await self._http.close()
        shutil.rmtree(self.profile, ignore_errors=True)


def chromium_available() -> bool:
    return CHROMIUM is not None and os.access(CHROMIUM, os.X_OK)
