"""Headless Chromium for system tests, driven by the DevTools protocol over a pipe.

``visit(url, ready, profile)`` loads one page in a fresh profile where no host name resolves,
waits until the JavaScript expression ``ready`` is true, and returns the DOM with every request
the page made and every error it logged. Requests are the page's own (the Network domain of its
target): Chromium's background traffic (update checks, time queries) is not the page's and is
not recorded. The protocol runs over fds 3 and 4 (``--remote-debugging-pipe``), so no WebSocket
client is needed. Chromium is Debian's /usr/bin/chromium (`make browser` installs it).
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # offline, whatever the machine can reach
    "--remote-debugging-pipe",
]
# Polls `ready` (an expression) until true or the deadline, then hands back the DOM.
SETTLE = """
new Promise((resolve) => {
  const deadline = Date.now() + %d;
  (function poll() {
    let done = false;
    try { done = Boolean(%s); } catch (error) { done = false; }
    if (done || Date.now() > deadline) resolve([done, document.documentElement.outerHTML]);
    else setTimeout(poll, 50);
  })();
})
"""


@dataclass
class Visit:
    """What one page load left: its DOM, whether ``ready`` came true, and what it asked for."""

    dom: str
    ready: bool
    requests: list[str] = field(default_factory=list)  # URLs, the page's own first
    failed: list[str] = field(default_factory=list)  # "URL: net::ERR_..."
    errors: list[str] = field(default_factory=list)  # console errors, uncaught exceptions


class DevTools:
    """A Chromium process and its protocol pipe; events are kept, in order, for the caller."""

    def __init__(self, profile: Path, timeout: float) -> None:
        if not CHROMIUM.is_file():
            raise AssertionError(f"{CHROMIUM} is missing: `make browser` installs it")
        self.timeout, self._next = timeout, 0
        self.events: list[dict] = []
        self._replies: queue.Queue[dict | None] = queue.Queue()
        profile.mkdir(parents=True, exist_ok=True)
        to_chrome, self._write = os.pipe()
        self._read, from_chrome = os.pipe()
        # Chromium reads commands on fd 3 and answers on fd 4; the pipe ends are first moved
        # to fds >= 10 so the redirections cannot clobber each other.
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_chrome, from_chrome)]
        for fd in (to_chrome, from_chrome):
            os.close(fd)
        shell = f'exec "$0" "$@" 3<&{ends[0]} 4>&{ends[1]} {ends[0]}<&- {ends[1]}>&-'
        self.log = profile / "chromium.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                ["bash", "-c", shell, str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                pass_fds=ends,
                start_new_session=True,
            )
        for fd in ends:
            os.close(fd)
        threading.Thread(target=self._reader, daemon=True).start()

    def _reader(self) -> None:
        buffer = b""
        with open(self._read, "rb", buffering=0) as pipe:
            while chunk := pipe.read(1 << 16):
                buffer += chunk
                *messages, buffer = buffer.split(b"\0")
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message:
                        self._replies.put(message)
                    else:
                        self.events.append(message)
        self._replies.put(None)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send one command and return its result (AssertionError on an error or timeout)."""
        self._next += 1
        command = {"id": self._next, "method": method, "params": params or {}}
        if session:
            command["sessionId"] = session
        data = json.dumps(command).encode() + b"\0"
        while data:
            data = data[os.write(self._write, data) :]
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                reply = self._replies.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{method}: no reply in {self.timeout}s") from None
            if reply is None:
                raise AssertionError(f"chromium exited during {method}:\n{self.output()}")
            if reply["id"] == self._next:
                break
        if "error" in reply:
            raise AssertionError(f"{method}: {reply['error']}")
        return reply["result"]

    def wait_event(self, method: str, session: str) -> dict:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            for event in list(self.events):
                if event["method"] == method and event.get("sessionId") == session:
                    return event
            time.sleep(0.02)
        raise AssertionError(f"no {method} in {self.timeout}s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("Browser.close")
            except AssertionError:
                pass
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        os.close(self._write)


def visit(url: str, ready: str, profile: Path, wait_ms: int = 30_000) -> Visit:
    """Load ``url`` in headless Chromium; return the DOM once ``ready`` is true (or on time-out)."""
    browser = DevTools(profile, timeout=wait_ms / 1000 + 60)
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        attached = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})
        session = attached["sessionId"]
        for domain in ("Network", "Page", "Runtime", "Log"):
            browser.send(f"{domain}.enable", session=session)
        start = len(browser.events)
        browser.send("Page.navigate", {"url": url}, session=session)
        browser.wait_event("Page.loadEventFired", session)
        settled = browser.send(
            "Runtime.evaluate",
            {"expression": SETTLE % (wait_ms, ready), "awaitPromise": True, "returnByValue": True},
            session=session,
        )
        done, dom = settled["result"]["value"]
        page = [e for e in browser.events[start:] if e.get("sessionId") == session]
    finally:
        browser.close()
    result, urls = Visit(dom=dom, ready=done), {}
    for event in page:
        params = event["params"]
        if event["method"] == "Network.requestWillBeSent":
            urls[params["requestId"]] = params["request"]["url"]
            result.requests.append(params["request"]["url"])
        elif event["method"] == "Network.loadingFailed":
            result.failed.append(f"{urls.get(params['requestId'])}: {params['errorText']}")
        elif event["method"] == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            result.errors.append(details.get("exception", {}).get("description", details["text"]))
        elif event["method"] == "Runtime.consoleAPICalled" and params["type"] == "error":
            result.errors.append(
                " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
            )
        elif event["method"] == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            result.errors.append(f"{entry['text']} {entry.get('url', '')}".strip())
    return result
