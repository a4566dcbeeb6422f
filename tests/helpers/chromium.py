"""Headless Chromium driven over the DevTools protocol through a pipe, for tests that open a page.

``--remote-debugging-pipe`` makes Chromium read NUL-terminated JSON commands on fd 3 and write replies
and events on fd 4, so no websocket library or browser download is needed (Debian's ``chromium`` is).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["find_chromium", "Browser", "Page"]


def find_chromium() -> str | None:
    """Path of a Chromium or Chrome binary on PATH, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """One headless Chromium process; use as a context manager.

    Args:
        binary: the browser executable.
        timeout: seconds any single protocol reply may take.
    """

    def __init__(self, binary: str, timeout: float = 30.0):
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="medlens-chromium-")
        cmd_r, self._cmd_w = os.pipe()  # we write commands, Chromium reads them as fd 3
        self._evt_r, evt_w = os.pipe()  # Chromium writes fd 4, we read

        def child_fds():
            os.dup2(cmd_r, 3)
            os.dup2(evt_w, 4)

        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
        self._proc = subprocess.Popen(
            [
                binary,
                "--headless",
                "--remote-debugging-pipe",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--mute-audio",
                f"--user-data-dir={self._profile}",
                "about:blank",
            ],
            preexec_fn=child_fds,
            pass_fds=(3, 4),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        os.close(cmd_r)
        os.close(evt_w)
        self._buf = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._proc.poll() is None:
            # a browser that already died has nothing to close; the wait below reaps it either way
            with contextlib.suppress(OSError, TimeoutError, EOFError, RuntimeError):
                self.call("Browser.close")
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
        for fd in (self._cmd_w, self._evt_r):
            with contextlib.suppress(OSError):  # closed already by an earlier close()
                os.close(fd)
        shutil.rmtree(self._profile, ignore_errors=True)

    def _receive(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buf:
            ready, _, _ = select.select([self._evt_r], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError(f"no DevTools message within {timeout} s")
            chunk = os.read(self._evt_r, 1 << 20)
            if not chunk:
                raise EOFError(
                    f"Chromium exited: {self._proc.stderr.read().decode(errors='replace')[-2000:]}"
                )
            self._buf += chunk
        message, self._buf = self._buf.split(b"\0", 1)
        return json.loads(message)

    def call(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        """Send one command and return its result; events that arrive meanwhile go to ``events``."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._cmd_w, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive(self.timeout)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float | None = None) -> dict[str, Any]:
        """Collect events until one named ``method`` arrives."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            event = self._receive(max(0.0, deadline - time.monotonic()))
            self.events.append(event)
            if event.get("method") == method:
                return event

    def drain(self, quiet: float = 0.5) -> None:
        """Collect events until none arrives for ``quiet`` seconds."""
        try:
            while True:
                self.events.append(self._receive(quiet))
        except TimeoutError:
            pass

    def open(self, url: str, *, width: int = 1280, height: int = 900) -> Page:
        """A new tab with network, console and log events recorded, navigated to ``url`` and loaded."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Network", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=session)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        start = len(self.events)
        self.call("Page.navigate", {"url": url}, session=session)
        self.wait_for("Page.loadEventFired")
        self.drain()
        return Page(self, session, start)


class Page:
    """A loaded tab: what it requested and logged, and calls to inspect it."""

    def __init__(self, browser: Browser, session: str, first_event: int):
        self.browser, self.session, self._first = browser, session, first_event

    def _events(self, *methods: str) -> list[dict[str, Any]]:
        return [
            e["params"]
            for e in self.browser.events[self._first :]
            if e.get("sessionId") == self.session and e.get("method") in methods
        ]

    @property
    def requested_urls(self) -> list[str]:
        """Every URL the page asked for, the page itself included (blocked requests too)."""
        return [e["request"]["url"] for e in self._events("Network.requestWillBeSent")]

    @property
    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and browser log entries of level error or warning."""
        out = [
            f"console.{e['type']}: {e.get('args')}"
            for e in self._events("Runtime.consoleAPICalled")
            if e["type"] in ("error", "warning", "assert")
        ]
        out += [f"exception: {e['exceptionDetails']}" for e in self._events("Runtime.exceptionThrown")]
        out += [
            f"{e['entry']['source']} {e['entry']['level']}: {e['entry']['text']}"
            for e in self._events("Log.entryAdded")
            if e["entry"]["level"] in ("error", "warning")
        ]
        return out

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression (DevTools evaluation is not subject to the page's CSP)."""
        result = self.browser.call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=self.session
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def emulate_media(self, media: str) -> None:
        """Render as ``screen`` or ``print``."""
        self.browser.call("Emulation.setEmulatedMedia", {"media": media}, session=self.session)

    def screenshot(self, path: str | Path, *, max_height: int | None = None) -> Path:
        """A PNG of the page from its top, ``max_height`` CSS pixels tall at most (the whole page when None)."""
        metrics = self.browser.call("Page.getLayoutMetrics", session=self.session)
        size = metrics["cssContentSize"]
        height = size["height"] if max_height is None else min(size["height"], max_height)
        shot = self.browser.call(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {
                    "x": 0,
                    "y": 0,
                    "width": metrics["cssLayoutViewport"]["clientWidth"],
                    "height": height,
                    "scale": 1,
                },
            },
            session=self.session,
        )
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def print_pdf(self) -> bytes:
        """The page printed to PDF with its own ``@page`` size."""
        result = self.browser.call(
            "Page.printToPDF", {"preferCSSPageSize": True, "printBackground": False}, session=self.session
        )
        return base64.b64decode(result["data"])
