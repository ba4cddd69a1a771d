"""Headless Chromium driven over the DevTools protocol (CDP), for the UI tests.

`chromium --dump-dom --virtual-time-budget=...` hangs now and then on a React app that keeps
requests open (virtual time never runs out while a fetch is pending), so the tests drive the browser
the way Selenium and Playwright do: open the page, then poll the live DOM in real time until what the
test expects is there (or a deadline passes, with the DOM so far in the failure message). The
protocol is spoken over `websockets`, already a pinned dependency; the browser is Debian's.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType

import httpx
from websockets.sync.client import ClientConnection, connect


class BrowserError(RuntimeError):
    """Chromium did not start, or a DevTools command failed."""


class Chromium:
    """One headless Chromium with one page; every process it starts is killed on exit."""

    def __init__(self, binary: str, profile: Path, width: int = 1400, height: int = 1000) -> None:
        self.binary, self.profile, self.size = binary, profile, (width, height)
        self._ids = itertools.count(1)
        self._proc: subprocess.Popen[bytes] | None = None
        self._ws: ClientConnection | None = None

    def __enter__(self) -> Chromium:
        self.profile.mkdir(parents=True, exist_ok=True)
        port_file = self.profile / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)
        cmd = [
            self.binary,
            "--headless",
            "--no-sandbox",  # root in a container
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--remote-debugging-port=0",
            "--remote-allow-origins=*",
            f"--user-data-dir={self.profile}",
            f"--window-size={self.size[0]},{self.size[1]}",
            "about:blank",
        ]
        log = open(self.profile.parent / "chromium.log", "wb")  # noqa: SIM115 - closed with the process
        self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        try:
            port = self._devtools_port(port_file)
            pages = [t for t in self._targets(port) if t["type"] == "page"]
            if not pages:
                raise BrowserError("chromium has no page target")
            self._ws = connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
            self.send("Page.enable")
            self.send("Runtime.enable")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._ws is not None:
            self._ws.close()
            self._ws = None
        if self._proc is not None:
            try:  # the browser and its helpers (zygote, GPU, renderers)
                os.killpg(self._proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._proc.wait(timeout=30)
            self._proc = None

    def _devtools_port(self, port_file: Path, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise BrowserError(
                    f"chromium exited {self._proc.returncode}; see {self.profile.parent}/chromium.log"
                )
            if port_file.exists() and port_file.read_text().strip():
                return int(port_file.read_text().split()[0])
            time.sleep(0.2)
        raise BrowserError(f"chromium did not open its DevTools port within {timeout:.0f}s")

    @staticmethod
    def _targets(port: int) -> list[dict[str, str]]:
        return httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=30).json()

    def send(self, method: str, timeout: float = 60, **params: object) -> dict:
        """One DevTools command; its result (events that arrive meanwhile are dropped)."""
        if self._ws is None:
            raise BrowserError("the browser is not open")
        call_id = next(self._ids)
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"{method} got no answer within {timeout:.0f}s")
            message = json.loads(self._ws.recv(timeout=left))
            if message.get("id") != call_id:
                continue
            if "error" in message:
                raise BrowserError(f"{method}: {message['error']}")
            return message["result"]

    def open(self, url: str) -> None:
        result = self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise BrowserError(f"could not open {url}: {result['errorText']}")

    def dom(self) -> str:
        result = self.send(
            "Runtime.evaluate", expression="document.documentElement.outerHTML", returnByValue=True
        )
        return str(result["result"].get("value", ""))

    def wait_for(self, *needles: str, timeout: float = 120) -> str:
        """Poll the live DOM until every needle is in it; the DOM then. Fails with what was missing."""
        deadline = time.monotonic() + timeout
        while True:
            dom = self.dom()
            missing = [needle for needle in needles if needle not in dom]
            if not missing:
                return dom
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"after {timeout:.0f}s the page still lacks {missing}; its DOM:\n{dom[-3000:]}"
                )
            time.sleep(0.5)

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path
