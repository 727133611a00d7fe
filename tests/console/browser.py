"""Headless Chromium for the console's browser tests (Playwright for Python).

Playwright cannot download its browsers here: it drives Debian's `chromium` package
(`/usr/bin/chromium`, or `CONSOLE_TEST_CHROMIUM`), which `scripts/test` installs with apt-get
when it is missing and it runs as root. Without it the browser tests are skipped locally and
FAIL when CI=true. Every page a test visits is also checked for script errors and Content
Security Policy violations, so a blocked inline script or style cannot pass unnoticed.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[2]
#: git-ignored (`build/`): the tests leave one screenshot per page and width here
SCREENSHOTS = ROOT / "build" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def chromium_path() -> str | None:
    configured = os.environ.get("CONSOLE_TEST_CHROMIUM")
    if configured:
        return configured
    return shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    )


@pytest.fixture
def browser() -> Iterator[Browser]:
    """One Chromium per test (a second or so). Not shared wider: while Playwright's sync API is
    open it keeps an event loop running in this thread, and fixtures set up before it (the
    database, the live gateway) call asyncio.run; a test asks for it after `console_env`."""
    path = chromium_path()
    if path is None:
        problem = "Chromium is not installed (apt-get install chromium, or scripts/test as root)"
        if IN_CI:
            pytest.fail(f"CI=true and {problem}", pytrace=False)
        pytest.skip(problem)
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, headless=True, args=args)
        yield launched
        launched.close()


class PageProblems:
    """Script errors and CSP violations seen by a page."""

    def __init__(self, page: Page) -> None:
        self.messages: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.messages.append(f"page error: {error}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and not re.search(r"status of (4\d\d)", message.text):
            self.messages.append(message.text)

    def assert_none(self) -> None:
        assert not self.messages, self.messages


def screenshot(page: Page, name: str) -> Path:
    """Write build/screenshots/<name>-<width>.png (full page)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    width = page.viewport_size["width"] if page.viewport_size else 0
    label = "phone" if width and width < 700 else "desktop"
    path = SCREENSHOTS / f"{name}-{label}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
