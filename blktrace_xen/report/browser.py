"""Open a report in headless Chromium over the DevTools protocol and check it renders.

Used by the browser test and by the script that regenerates the screenshot in
docs/img. The DevTools protocol is spoken over ``--remote-debugging-pipe``
(file descriptors 3 and 4, NUL-terminated JSON) rather than a websocket: no
TCP port to pick or race for under pytest-xdist, and no extra dependency.

What is checked, and how:

* console errors: ``Runtime.consoleAPICalled`` of type error/assert,
  ``Runtime.exceptionThrown`` and ``Log.entryAdded`` at level error;
* offline: every request the page makes (``Network.requestWillBeSent``) is
  recorded, so a caller can assert nothing but the file itself was loaded;
* figures: for every ``div.plotly-graph-div``, the number of traces in
  ``gd.data`` and the number of points plotly actually holds per trace.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blktrace_xen.errors import BlktraceXenError

CHROMIUM = "/usr/bin/chromium"

# Flags for a quiet, hermetic headless browser: no sandbox (CI containers
# lack user namespaces), no GPU, nothing that phones home.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
    "--remote-debugging-pipe",
)

_FIGURES_JS = """
(() => Array.from(document.querySelectorAll('div.plotly-graph-div')).map(gd => ({
  id: gd.id,
  traces: (gd.data || []).length,
  points: (gd._fullData || []).map(t => (t.x && t.x.length) || 0),
  svg: gd.querySelectorAll('svg.main-svg').length,
})))()
"""


class BrowserError(BlktraceXenError):
    """Chromium could not be started or did not answer in time."""


@dataclass(slots=True)
class RenderResult:
    """What the browser saw when it opened the report."""

    title: str
    console_errors: list[str]
    requests: list[str]
    figures: list[dict[str, Any]]
    screenshot: bytes | None = None
    timings: dict[str, float] = field(default_factory=dict)


class _Pipe:
    """A DevTools connection over the two pipes Chromium reads and writes."""

    def __init__(self, to_browser: int, from_browser: int, deadline: float) -> None:
        self._w = to_browser
        self._r = from_browser
        self._deadline = deadline
        self._buf = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def _read_message(self) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("chromium: no answer before the deadline")
            ready, _, _ = select.select([self._r], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise BrowserError("chromium: the DevTools pipe closed (browser exited)")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def call(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read_message()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"chromium: {method} failed: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            self.events.append(reply)

    def wait_event(self, method: str, session: str | None = None) -> dict[str, Any]:
        for i, ev in enumerate(self.events):
            if ev.get("method") == method and ev.get("sessionId") == session:
                return self.events.pop(i)
        while True:
            ev = self._read_message()
            if ev.get("method") == method and ev.get("sessionId") == session:
                return ev
            self.events.append(ev)


def _console_errors(events: list[dict[str, Any]]) -> list[str]:
    errors = []
    for ev in events:
        method = ev.get("method")
        params = ev.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = params.get("args", [])
            errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            exc = details.get("exception", {})
            errors.append(str(exc.get("description") or details.get("text", "exception")))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            errors.append(str(params["entry"].get("text", "")))
    return errors


def render_check(
    html_path: str | Path,
    *,
    chromium: str = CHROMIUM,
    width: int = 1280,
    screenshot_height: int | None = None,
    timeout: float = 120.0,
) -> RenderResult:
    """Open ``html_path`` in headless Chromium and report what rendered.

    ``screenshot_height``: when given, a PNG of the page's top ``width`` x
    ``screenshot_height`` pixels is returned in ``RenderResult.screenshot``.
    """
    page = Path(html_path).resolve()
    if not page.is_file():
        raise BrowserError(f"{page}: no such report")
    deadline = time.monotonic() + timeout
    to_r, to_w = os.pipe()
    from_r, from_w = os.pipe()
    with tempfile.TemporaryDirectory(prefix="bx-chromium-") as profile:
        argv = [chromium, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},900"]
        # Chromium reads DevTools commands on fd 3 and writes answers on fd 4.
        # posix_spawn's file actions put the pipes there in the child only (via
        # spare high numbers, in case a pipe already is fd 3 or 4), with no
        # preexec_fn, which is unsafe beside the thread pools polars keeps.
        spare_in, spare_out = 1000, 1001
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_DUP2, to_r, spare_in),
            (os.POSIX_SPAWN_DUP2, from_w, spare_out),
            (os.POSIX_SPAWN_DUP2, spare_in, 3),
            (os.POSIX_SPAWN_DUP2, spare_out, 4),
            (os.POSIX_SPAWN_CLOSE, spare_in),
            (os.POSIX_SPAWN_CLOSE, spare_out),
        ]
        try:
            pid = os.posix_spawn(argv[0], argv, dict(os.environ), file_actions=actions)
        except OSError as exc:
            raise BrowserError(f"{argv[0]}: cannot start: {exc.strerror}") from exc
        finally:
            os.close(to_r)
            os.close(from_w)
        try:
            return _drive(_Pipe(to_w, from_r, deadline), page, width, screenshot_height)
        except BrowserError as exc:
            raise BrowserError(f"{argv[0]}: {exc}") from exc
        finally:
            os.close(to_w)
            os.close(from_r)
            _reap(pid)


def _reap(pid: int) -> None:
    """Wait for the browser to exit after its pipe closed; kill it if it lingers."""
    for _ in range(100):
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def _drive(cdp: _Pipe, page: Path, width: int, screenshot_height: int | None) -> RenderResult:
    started = time.monotonic()
    target = cdp.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = cdp.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        cdp.call(f"{domain}.enable", session=session)
    cdp.call(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False},
        session=session,
    )
    cdp.call("Page.navigate", {"url": page.as_uri()}, session=session)
    cdp.wait_event("Page.loadEventFired", session=session)
    loaded = time.monotonic()
    figs = cdp.call(
        "Runtime.evaluate",
        {"expression": _FIGURES_JS, "returnByValue": True, "awaitPromise": True},
        session=session,
    )["result"].get("value", [])
    title = cdp.call(
        "Runtime.evaluate", {"expression": "document.title", "returnByValue": True}, session=session
    )["result"].get("value", "")
    shot = None
    if screenshot_height is not None:
        data = cdp.call(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": screenshot_height, "scale": 1},
            },
            session=session,
        )["data"]
        shot = base64.b64decode(data)
    requests = [
        str(ev["params"]["request"]["url"])
        for ev in cdp.events
        if ev.get("method") == "Network.requestWillBeSent"
    ]
    result = RenderResult(
        title=str(title),
        console_errors=_console_errors(cdp.events),
        requests=requests,
        figures=list(figs),
        screenshot=shot,
        timings={"load_s": loaded - started, "total_s": time.monotonic() - started},
    )
    # The browser may close the pipe before it answers.
    with contextlib.suppress(BrowserError):
        cdp.call("Browser.close")
    return result
