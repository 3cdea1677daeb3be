"""A page opened in headless Chromium over the DevTools protocol, the network switched off.

Enough of the protocol for the report tests: navigate, evaluate JavaScript, take a screenshot,
and record what the page did (console errors, uncaught exceptions, every request it made). The
websocket client is tornado's (installed with Flower), so nothing else is needed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from tornado.websocket import websocket_connect

from tests.services import require_chromium

LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


class Page:
    """One tab: ``call`` a protocol method; ``events`` holds every event received so far."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self._next = 0

    async def call(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        """Send ``method`` and wait for its answer (events in between are kept)."""
        self._next += 1
        ident = self._next
        await self.ws.write_message(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            raw = await asyncio.wait_for(self.ws.read_message(), max(deadline - time.monotonic(), 0.01))
            if raw is None:
                raise RuntimeError(f"DevTools closed the connection during {method}")
            msg = json.loads(raw)
            if msg.get("id") == ident:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return dict(msg.get("result", {}))
            self.events.append(msg)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited)."""
        args = {"expression": expression, "returnByValue": True, "awaitPromise": True}
        out = await self.call("Runtime.evaluate", **args)
        if "exceptionDetails" in out:
            raise RuntimeError(f"{expression[:80]}: {out['exceptionDetails']}")
        return out["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        """Poll ``expression`` until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = await self.evaluate(expression)
            if value:
                return value
            await asyncio.sleep(0.2)
        raise TimeoutError(f"never true: {expression}")

    async def screenshot(self, path: Path) -> None:
        """The visible page as a PNG at ``path``."""
        out = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(out["data"]))

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries seen so far."""
        found = []
        for e in self.events:
            p = e.get("params", {})
            if e.get("method") == "Runtime.exceptionThrown":
                found.append(json.dumps(p.get("exceptionDetails", {}))[:500])
            elif e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                found.append(" ".join(str(a.get("value", a.get("description"))) for a in p.get("args", [])))
            elif e.get("method") == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                found.append(str(p["entry"].get("text")))
        return found

    def requests(self) -> list[str]:
        """Every URL the page asked for."""
        sent = [e for e in self.events if e.get("method") == "Network.requestWillBeSent"]
        return [e["params"]["request"]["url"] for e in sent]


class Browser:
    """Headless Chromium with remote debugging on a free port; ``open`` a file offline."""

    def __init__(self, profile: Path, width: int = 1200, height: int = 1600) -> None:
        exe = require_chromium()
        self.width, self.height = width, height
        cmd = [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            "--remote-debugging-port=0",
            "--remote-allow-origins=*",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        assert self.proc.stderr is not None
        seen = []
        for line in self.proc.stderr:
            seen.append(line)
            m = LISTENING.search(line)
            if m:
                self.port = int(m.group(1).split(":")[2].split("/")[0])
                break
        else:
            raise RuntimeError(f"chromium did not start DevTools: {''.join(seen)[-2000:]}")
        # keep reading its log, or a full pipe would stall Chromium
        threading.Thread(target=seen.extend, args=(self.proc.stderr,), daemon=True).start()

    def close(self) -> None:
        """Stop Chromium."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def _open(self, url: str) -> Page:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=10) as r:
            tabs = [t for t in json.load(r) if t.get("type") == "page"]
        ws = await websocket_connect(tabs[0]["webSocketDebuggerUrl"], max_message_size=64 << 20)
        page = Page(ws)
        for domain in ("Runtime", "Log", "Network", "Page"):
            await page.call(f"{domain}.enable")
        await page.call(
            "Network.emulateNetworkConditions",
            offline=True,
            latency=0,
            downloadThroughput=-1,
            uploadThroughput=-1,
        )
        await page.call(
            "Emulation.setDeviceMetricsOverride",
            width=self.width,
            height=self.height,
            deviceScaleFactor=1,
            mobile=False,
        )
        await page.call("Page.navigate", url=url)
        await page.wait_for("document.readyState === 'complete'")
        return page

    def run(self, path: Path, steps: Any) -> Any:
        """Open ``path`` offline, then ``await steps(page)``; its result."""

        async def go() -> Any:
            page = await self._open(path.resolve().as_uri())
            try:
                return await steps(page)
            finally:
                page.ws.close()

        return asyncio.run(go())
