"""Headless Chromium driven by Playwright, for the system tests of the page at / and of the
`dvc plots show` page.

Chromium is Debian's /usr/bin/chromium (`make browser` installs it; Playwright's own browser
download is never used). No host name resolves but 127.0.0.1, so a page that reaches for a CDN
fails visibly, and every request a tab makes is recorded with its errors.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd

from contract.schema import Schema

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium for the duration of the block."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.is_file():
        raise AssertionError(f"{CHROMIUM} is missing: `make browser` installs it")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Tab:
    """A page and what it did: every URL it asked for, uncaught exceptions, console errors."""

    page: Any
    requests: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def hosts(self) -> set[str]:
        return {urlsplit(url).hostname or url for url in self.requests}


@dataclass
class Visit:
    """What one page load left: its DOM, whether ``ready`` came true, and what it asked for."""

    dom: str
    ready: bool
    requests: list[str] = field(default_factory=list)  # URLs, the page itself first
    failed: list[str] = field(default_factory=list)  # "URL: net::ERR_..."
    errors: list[str] = field(default_factory=list)  # uncaught exceptions, console errors


def visit(url: str, ready: str, wait_ms: int = 30_000) -> Visit:
    """Load ``url`` in a fresh headless Chromium; the DOM once the JavaScript expression
    ``ready`` is true (or when ``wait_ms`` ran out)."""
    from playwright.sync_api import TimeoutError as Timeout

    with chromium() as browser:
        page = browser.new_context().new_page()
        requests: list[str] = []
        failed: list[str] = []
        errors: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        page.on("requestfailed", lambda request: failed.append(f"{request.url}: {request.failure}"))
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on(
            "console",
            lambda message: errors.append(message.text) if message.type == "error" else None,
        )
        page.goto(url)
        try:
            page.wait_for_function(ready, timeout=wait_ms)
            done = True
        except Timeout:
            done = False
        return Visit(page.content(), done, requests, failed, errors)


@contextlib.contextmanager
def tab(browser: Any, url: str, ready: str = "body[data-ready=true]") -> Iterator[Tab]:
    """A new tab (its own context: no cache shared with other tabs) at ``url``, once the
    element ``ready`` names is there."""
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    seen = Tab(page)
    page.on("request", lambda request: seen.requests.append(request.url))
    page.on("pageerror", lambda error: seen.exceptions.append(str(error)))
    page.on(
        "console",
        lambda message: (
            seen.console_errors.append(message.text) if message.type == "error" else None
        ),
    )
    try:
        page.goto(url)
        page.wait_for_selector(ready, state="attached")
        yield seen
    finally:
        context.close()


# --- rows and answers -----------------------------------------------------------------------


def instances(frame: pd.DataFrame, schema: Schema) -> list[dict]:
    """Rows as JSON instances: numbers as floats, categories as strings, missing as None."""
    out = []
    for record in frame[schema.names].astype(object).to_dict("records"):
        row = {}
        for f in schema.features:
            value = record[f.name]
            missing = value is None or (isinstance(value, float) and math.isnan(value))
            row[f.name] = None if missing else float(value) if f.type == "number" else str(value)
        out.append(row)
    return out


def sampled(schema: Schema, test_split: pd.DataFrame | None, n: int) -> list[dict]:
    """``n`` rows: the test split's own, then real values drawn from it, then values anywhere
    in the schema's ranges and domains (missing ones included)."""
    from src.onnx_export import sample_rows

    parts = []
    if test_split is not None:
        own = test_split[schema.names].head(n)
        parts += [own, sample_rows(schema, (n - len(own)) // 2, 1, test_split)]
    have = sum(len(p) for p in parts)
    parts.append(sample_rows(schema, n - have, 2))
    return instances(pd.concat(parts, ignore_index=True), schema)


def on_device(page: Any, rows: list[dict], variant: str | None = None) -> dict:
    """The page's own on-device predictions for ``rows`` (the primary variant by default)."""
    return page.evaluate(
        "([rows, variant]) => window.lockserve.predictOnDevice(rows, variant ?? undefined)",
        [rows, variant],
    )


def compare(server: list[dict], device: list[dict]) -> tuple[float, int]:
    """Two lists of predictions side by side: the largest difference of a probability or value,
    and how many labels differ."""
    worst, differing = 0.0, 0
    for s, d in zip(server, device, strict=True):
        if "probabilities" in s:
            differing += d["label"] != s["label"]
            worst = max(
                worst,
                *(abs(s["probabilities"][k] - d["probabilities"][k]) for k in s["probabilities"]),
            )
        else:
            worst = max(worst, abs(s["value"] - d["value"]))
    return worst, differing
