"""A small driver for headless Chromium over the DevTools protocol (CDP).

Chromium is started with ``--remote-debugging-pipe``: it reads CDP commands
from file descriptor 3 and writes replies to 4, NUL-separated JSON. A pipe,
unlike the usual websocket, needs no extra package, no free port and no
polling for the browser to come up, and dies with the process.

Only what the screenshots and the archive's accessibility test need is here:
open a page at a width and colour scheme, evaluate JavaScript, capture a PNG.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

from newsletter.errors import ConfigError, NewsletterError

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
    "--hide-scrollbars", "--mute-audio", "--remote-debugging-pipe",
)
MAX_HEIGHT = 16_000  # Chromium refuses captures much taller than 16K pixels


class BrowserError(NewsletterError):
    """Chromium misbehaved: it exited, timed out or answered a command with an error."""


def find_chromium(executable: str | None = None) -> str:
    """The Chromium binary to use, or a one-line ConfigError telling how to get one."""
    for name in ([executable] if executable else CANDIDATES):
        found = shutil.which(name) if name else None
        if found:
            return found
    wanted = executable or "chromium"
    raise ConfigError(f"{wanted} not found: install Chromium (Debian: apt-get install chromium) for screenshots")


def _high_fd(fd: int) -> int:
    """A duplicate of ``fd`` numbered 10 or more, so moving it onto 3 or 4 clobbers nothing."""
    return fcntl.fcntl(fd, fcntl.F_DUPFD, 10)


class Chromium:
    """One headless Chromium process; use as a context manager so it always ends."""

    def __init__(self, executable: str | None = None, *, timeout: float = 30.0):
        self.executable = find_chromium(executable)
        self.timeout = timeout
        self._next_id = 0
        self._buffer = b""
        self._events: deque[dict[str, Any]] = deque(maxlen=1000)
        self._process: subprocess.Popen[bytes] | None = None

    # ---- process ------------------------------------------------------------------
    def __enter__(self) -> "Chromium":
        self._profile = tempfile.TemporaryDirectory(prefix="newsletter-chromium-")
        self._stderr = tempfile.TemporaryFile()
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        child_r, child_w = _high_fd(to_browser_r), _high_fd(from_browser_w)

        def wire_pipes() -> None:  # runs in the child, before exec
            os.dup2(child_r, 3)
            os.dup2(child_w, 4)

        try:
            self._process = subprocess.Popen(
                [self.executable, *FLAGS, f"--user-data-dir={self._profile.name}", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr,
                pass_fds=(3, 4), preexec_fn=wire_pipes,
            )
        finally:
            for fd in (to_browser_r, from_browser_w, child_r, child_w):
                os.close(fd)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        try:
            self._send({"id": self._new_id(), "method": "Browser.close"})
        except OSError:
            pass
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        for fd in (self._to_browser, self._from_browser):
            os.close(fd)
        self._stderr.close()
        self._profile.cleanup()

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else "no output"

    # ---- protocol -----------------------------------------------------------------
    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _send(self, message: dict[str, Any]) -> None:
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_browser], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise BrowserError(f"Chromium did not answer within {self.timeout:g} s")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise BrowserError(f"Chromium exited: {self._stderr_tail()}")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one command and return its result; events that arrive meanwhile are kept."""
        if self._process is None:
            raise BrowserError("Chromium is not running (use it as a context manager)")
        ident = self._new_id()
        message: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self._send(message)
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == ident:
                if "error" in reply:
                    raise BrowserError(f"{method} failed: {reply['error'].get('message', reply['error'])}")
                return reply.get("result", {})
            if "method" in reply:
                self._events.append(reply)

    def wait_event(self, name: str, session: str | None = None) -> dict[str, Any]:
        """The next event called ``name`` (from the kept ones first)."""
        deadline = time.monotonic() + self.timeout
        while True:
            for event in list(self._events):
                if event["method"] == name and event.get("sessionId") == session:
                    self._events.remove(event)
                    return event.get("params", {})
            reply = self._receive(deadline)
            if "method" in reply:
                self._events.append(reply)

    def open(self, url: str, *, width: int = 800, height: int = 800, dark: bool = False) -> "Tab":
        """A new tab at ``width`` CSS pixels (device scale 1), with the colour scheme emulated, loaded."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        tab = Tab(self, session, width)
        tab.call("Page.enable")
        tab.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        tab.call("Emulation.setEmulatedMedia", features=[
            {"name": "prefers-color-scheme", "value": "dark" if dark else "light"}])
        tab.call("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired", session)
        return tab


class Tab:
    """One page in a :class:`Chromium`, addressed by its flattened CDP session."""

    def __init__(self, browser: Chromium, session: str, width: int):
        self.browser = browser
        self.session = session
        self.width = width

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        return self.browser.call(method, self.session, **params)

    def evaluate(self, expression: str, *, await_promise: bool = False) -> Any:
        """Run JavaScript in the page and return its (JSON-able) value."""
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=await_promise,
                           returnByValue=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise BrowserError(f"JavaScript error: {details.get('exception', {}).get('description') or details.get('text')}")
        return result.get("result", {}).get("value")

    def screenshot(self) -> bytes:
        """A PNG of the whole page, exactly ``width`` pixels wide (capped at MAX_HEIGHT tall)."""
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        height = max(1, min(int(size["height"] + 0.5), MAX_HEIGHT))
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": self.width, "height": height, "scale": 1})["data"]
        return base64.b64decode(data)


def file_url(path: Path) -> str:
    return path.resolve().as_uri()
