"""Open a local HTML file in headless Chromium and report what a reader would get.

Drives Debian's ``chromium`` through the Chrome DevTools Protocol over ``--remote-debugging-pipe``
(file descriptors 3 and 4, NUL-separated JSON): the standard library only, no driver binary to
match to the browser's version, no port, nothing downloaded. The page is loaded with the
console, log and network domains on, so every console error, uncaught exception and failed
resource load is captured; the call returns after the page's ``load`` event (images decoded).

    view = open_page(Path("report.html"), screenshot=Path("report.png"))
    view.console_errors, view.page_errors, view.n_cluster_rows, view.images

From the command line (the README's screenshot):

    python tests/browser.py report.html docs/report.png [width]

``CHROMIUM`` names the browser binary when it is not Debian's ``/usr/lib/chromium/chromium``
(called directly: the ``/usr/bin/chromium`` wrapper adds extension flags) or on PATH.
"""

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

INSTALL_HINT = "install Debian's chromium (apt-get install chromium), or set CHROMIUM=<binary>"
_CANDIDATES = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser", "google-chrome")
_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
          "--no-first-run", "--no-default-browser-check", "--disable-extensions",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--disable-default-apps", "--mute-audio", "--hide-scrollbars", "--remote-debugging-pipe")
# What the page is asked once loaded (one evaluation, after every load-time event was sent).
_PROBE = """({
  title: document.title,
  rows: document.querySelectorAll("tr.cluster-row").length,
  images: Array.from(document.images, i => [i.getAttribute("src").slice(0, 30), i.naturalWidth]),
  text: document.body ? document.body.innerText : ""
})"""


# Starts the browser with the pipe's ends on fds 3 (commands in) and 4 (answers out), where
# --remote-debugging-pipe expects them (a shell cannot: dash redirects fds 0-9 only).
_EXEC_WITH_PIPE = ("import os, sys; r, w = map(int, sys.argv[1:3]); os.dup2(r, 3); os.dup2(w, 4); "
                   "os.close(r); os.close(w); os.execv(sys.argv[3], sys.argv[3:])")


class BrowserError(RuntimeError):
    """Chromium could not be started, died, or did not answer in time (the message has the
    tail of its log)."""


@dataclass
class PageView:
    """What one page load gave.

    Attributes:
        title: ``document.title``.
        console_errors: ``console.error``/``console.assert`` calls and browser log errors
            (e.g. ``Failed to load resource: ... missing.png``), in order.
        page_errors: uncaught exceptions.
        n_cluster_rows: ``<tr class="cluster-row">`` elements.
        images: (first 30 characters of ``src``, ``naturalWidth``) per ``<img>``; 0 = not
            decoded.
        requests: URLs the page fetched besides itself, ``data:`` URIs left out.
        text: the page's visible text.
    """

    title: str
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    n_cluster_rows: int = 0
    images: list[tuple[str, int]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    text: str = ""


def find_chromium() -> str | None:
    """The browser binary: ``$CHROMIUM`` if set, else Debian's or one on PATH; None when
    there is none."""
    names = [os.environ["CHROMIUM"]] if os.environ.get("CHROMIUM") else _CANDIDATES
    return next(filter(None, map(shutil.which, names)), None)


def require_chromium() -> str:
    """The browser binary for a test; skips the test without one, or fails it when
    ``INTEGRATION_REQUIRED=1`` (CI), as the integration tier does for its servers."""
    import pytest

    binary = find_chromium()
    if binary is None:
        problem = f"headless browser tests: no Chromium found; {INSTALL_HINT}"
        if os.environ.get("INTEGRATION_REQUIRED") == "1":
            pytest.fail(f"{problem} (INTEGRATION_REQUIRED=1)", pytrace=False)
        pytest.skip(problem)
    return binary


def open_page(path: Path, screenshot: Path | None = None, *, width: int = 1280,
              height: int = 900, timeout: float = 30.0) -> PageView:
    """Load ``path`` in a fresh headless Chromium and wait for its ``load`` event.

    Args:
        path: a local HTML file.
        screenshot: where to write a full-page PNG (None: none).
        width, height: the viewport in CSS pixels (the screenshot is ``width`` wide).
        timeout: seconds for the whole visit.

    Raises:
        BrowserError: no browser, or it failed / did not answer within ``timeout``.
    """
    url = Path(path).resolve().as_uri()
    with _Chromium(timeout) as browser:
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.call("Target.attachToTarget",
                               {"targetId": target, "flatten": True})["sessionId"]
        for method in ("Page.enable", "Runtime.enable", "Log.enable", "Network.enable"):
            browser.call(method, session=session)
        browser.call("Page.setLifecycleEventsEnabled", {"enabled": True}, session=session)
        browser.call("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=session)
        nav = browser.call("Page.navigate", {"url": url}, session=session)
        if nav.get("errorText"):
            raise BrowserError(f"could not open {url}: {nav['errorText']}")
        browser.wait_for(lambda e: e["method"] == "Page.lifecycleEvent"
                         and e["params"]["name"] == "load"
                         and e["params"]["loaderId"] == nav.get("loaderId"))
        probe = browser.call("Runtime.evaluate", {"expression": _PROBE, "returnByValue": True},
                             session=session)["result"]["value"]
        if screenshot is not None:
            size = browser.call("Page.getLayoutMetrics", session=session)["cssContentSize"]
            shot = browser.call("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": size["height"], "scale": 1}},
                session=session)
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
        events = [e for e in browser.events if e.get("sessionId") == session]
    view = PageView(title=probe["title"], n_cluster_rows=probe["rows"],
                    images=[tuple(i) for i in probe["images"]], text=probe["text"])
    for event in events:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            view.console_errors.append(" ".join(_arg_text(a) for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            view.console_errors.append(f"{entry['text']} ({entry.get('url', '')})")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            view.page_errors.append(details.get("exception", {}).get("description")
                                    or details.get("text", ""))
        elif method == "Network.requestWillBeSent":
            request_url = params["request"]["url"]
            if request_url != url and not request_url.startswith("data:"):
                view.requests.append(request_url)
    return view


def screenshot(html_path: Path, png_path: Path, width: int = 1280) -> Path:
    """A full-page PNG of ``html_path``, ``width`` CSS pixels wide; returns ``png_path``."""
    open_page(Path(html_path), Path(png_path), width=width)
    return Path(png_path)


def screenshot_when_shown(url: str, png, texts: list[str], timeout: float = 120,
                          width: int = 1440, height: int = 900, click: str | None = None,
                          then: list[str] = ()) -> str:
    """Open ``url`` (a served page) in headless Chromium, poll the page's text until it
    shows every one of ``texts`` (a single-page app renders after `load`); with ``click``,
    click the innermost element whose text starts with it and poll until ``then`` shows too;
    then save a PNG of the viewport. Returns the text shown."""
    deadline = time.monotonic() + timeout - 15
    with _Chromium(timeout) as chromium:
        target = chromium.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = chromium.call("Target.attachToTarget",
                                {"targetId": target, "flatten": True})["sessionId"]
        chromium.call("Page.enable", session=session)
        chromium.call("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=session)
        nav = chromium.call("Page.navigate", {"url": url}, session=session)
        assert not nav.get("errorText"), f"{url}: {nav['errorText']}"

        def shown_when(wanted) -> str:
            while True:
                shown = chromium.call("Runtime.evaluate", {
                    "expression": "document.body ? document.body.innerText : ''",
                    "returnByValue": True}, session=session)["result"].get("value", "")
                if all(t in shown for t in wanted):
                    return shown
                missing = [t for t in wanted if t not in shown]
                assert time.monotonic() < deadline, (
                    f"{url} did not show {missing} within {timeout} s; it shows:\n"
                    f"{shown[:6000]}")
                time.sleep(1)

        shown = shown_when(texts)
        if click is not None:
            clicked = chromium.call("Runtime.evaluate", {"expression": (
                "(() => { const all = [...document.querySelectorAll('body *')].filter("
                f"e => (e.innerText || '').trim().startsWith({json.dumps(click)})); "
                "const el = all[all.length - 1]; if (!el) return false; "
                "el.scrollIntoView(); el.click(); return true; })()"),
                "returnByValue": True}, session=session)["result"].get("value")
            assert clicked, f"{url}: nothing to click whose text starts with {click!r}"
            shown = shown_when([*texts, *then])
            time.sleep(1)  # the drawer's opening animation, for the picture only
        shot = chromium.call("Page.captureScreenshot", {"format": "png"}, session=session)
    png.parent.mkdir(parents=True, exist_ok=True)
    png.write_bytes(base64.b64decode(shot["data"]))
    return shown


def _arg_text(arg: dict) -> str:
    if "value" in arg:
        return str(arg["value"])
    return arg.get("description") or arg.get("type", "?")


class _Chromium:
    """One headless Chromium process spoken to over its debugging pipe; closed (and its
    profile deleted) on exit. ``call`` sends a command and returns its result; every event
    read meanwhile is kept in ``events``."""

    def __init__(self, timeout: float):
        self.deadline = time.monotonic() + timeout
        self.events: list[dict] = []
        self._next_id = 0
        self._buffer = b""

    def __enter__(self):
        binary = find_chromium()
        if binary is None:
            raise BrowserError(f"no Chromium found: {INSTALL_HINT}")
        self._tmp = tempfile.TemporaryDirectory(prefix="decflow-chromium-")
        self._log_path = Path(self._tmp.name) / "chromium.log"
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # The child's ends, above fd 9 so that moving them onto 3 and 4 cannot clobber them.
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
                for fd in (to_browser_r, from_browser_w)]
        for fd in (to_browser_r, from_browser_w):
            os.close(fd)
        cmd = [binary, *_FLAGS, f"--user-data-dir={Path(self._tmp.name) / 'profile'}",
               "about:blank"]
        try:
            with open(self._log_path, "wb") as log:
                self._proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-c", _EXEC_WITH_PIPE, *map(str, ends), *cmd],
                    pass_fds=ends, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        except BaseException:
            for fd in (self._to_browser, self._from_browser):
                os.close(fd)
            self._tmp.cleanup()
            raise
        finally:
            for fd in ends:
                os.close(fd)
        return self

    def __exit__(self, *exc):
        try:
            if self._proc.poll() is None:
                try:
                    self._send("Browser.close", {}, None)
                    self._proc.wait(timeout=10)
                except (OSError, subprocess.TimeoutExpired):
                    self._proc.kill()
                    self._proc.wait()
        finally:
            os.close(self._to_browser)
            os.close(self._from_browser)
            self._tmp.cleanup()

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        msg_id = self._send(method, params or {}, session)
        while True:
            msg = self._read()
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise BrowserError(f"{method}: {msg['error'].get('message')}")
                return msg["result"]
            if "method" in msg:
                self.events.append(msg)

    def wait_for(self, match) -> dict:
        """The first event (already read or still to come) for which ``match(event)``."""
        for event in self.events:
            if match(event):
                return event
        while True:
            msg = self._read()
            if "method" in msg:
                self.events.append(msg)
                if match(msg):
                    return msg

    def _send(self, method: str, params: dict, session: str | None) -> int:
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        return self._next_id

    def _read(self) -> dict:
        while b"\0" not in self._buffer:
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise BrowserError(f"Chromium did not answer in time{self._log_tail()}")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise BrowserError(f"Chromium exited (code {self._proc.wait()})"
                                   f"{self._log_tail()}")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def _log_tail(self) -> str:
        try:
            lines = self._log_path.read_text(errors="replace").splitlines()[-15:]
        except OSError:
            return ""
        return (":\n  " + "\n  ".join(lines)) if lines else ""


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: python tests/browser.py PAGE.html OUT.png [WIDTH]")
    out = screenshot(Path(sys.argv[1]), Path(sys.argv[2]),
                     int(sys.argv[3]) if len(sys.argv) == 4 else 1280)
    print(out)
