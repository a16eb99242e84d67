"""Headless Chromium for the console tests: Debian's `chromium` driven by Playwright (never a
browser that Playwright downloads), and a watcher that records what a page did wrong."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, Request, Response

from tests.processes import REPO

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
# Chromium reports every 4xx/5xx answer a page receives as a console error of this form; those
# answers are checked one by one (expected or not) by the response watcher instead.
RESOURCE_ERROR = re.compile(r"^Failed to load resource: the server responded with a status of")


def screenshot_dir() -> Path:
    """CONSOLE_SCREENSHOTS, or var/screenshots in the repository (git-ignored)."""
    path = Path(os.environ.get("CONSOLE_SCREENSHOTS", REPO / "var" / "screenshots"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def launch(playwright: Playwright) -> Browser:
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: `bash deploy/local.sh test` installs "
                           "Debian's chromium (apt-get install chromium)")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)


@dataclass
class Watch:
    """Everything a page did that a test must account for."""

    errors: list[str] = field(default_factory=list)  # JS exceptions and console errors
    failed: list[str] = field(default_factory=list)  # requests that got no answer
    answers: list[tuple[int, str, str]] = field(default_factory=list)  # (status, method, url)
    urls: list[str] = field(default_factory=list)  # every request URL

    def attach(self, page: Page) -> Page:
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on("console", self._console)
        page.on("requestfailed", self._failed)
        page.on("request", lambda r: self.urls.append(r.url))
        page.on("response", self._response)
        return page

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and not RESOURCE_ERROR.match(message.text):
            self.errors.append(f"console: {message.text}")

    def _failed(self, request: Request) -> None:
        self.failed.append(f"{request.method} {request.url}: {request.failure}")

    def _response(self, response: Response) -> None:
        if response.status >= 400:
            self.answers.append((response.status, response.request.method, response.url))

    def unexpected(self, allowed: set[int]) -> list[tuple[int, str, str]]:
        return [a for a in self.answers if a[0] not in allowed]

    def check(self, allowed: set[int] = frozenset()) -> None:
        """No JS error, no failed request, no error answer except the `allowed` statuses."""
        assert not self.errors, self.errors
        assert not self.failed, self.failed
        assert not self.unexpected(set(allowed)), self.unexpected(set(allowed))
        assert all(a[0] < 500 for a in self.answers), self.answers
