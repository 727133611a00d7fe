"""Console fixtures: a live gateway (uvicorn on loopback) with the console on, its session
clock injected (`FakeClock`, so expiry is tested without waiting), and an httpx client that
keeps cookies like a browser.

The catalog has `local-preview` (streams partial images, edits with up to 2 reference images,
every parameter type), and a model hidden because its provider's key is unset.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.db.engine import make_engine
from tests.support.clock import FakeClock
from tests.support.live import ADMIN_TOKEN, LiveGateway, write_catalog

CATALOG = """
providers:
  local:
    adapter: local-preview
  nokey:
    adapter: openai
    base_url: http://127.0.0.1:9/v1
    api_key: ${TEST_CONSOLE_UNSET_KEY}
models:
  local-preview:
    description: Offline preview renderer
    routes: [{provider: local}]
    prompt_max_length: 200
    max_n: 2
    output_formats: [png, jpeg, webp]
    partial_images: true
    parameters:
      width:  {type: integer, min: 64, max: 1024, multiple_of: 8, default: 256}
      height: {type: integer, min: 64, max: 1024, multiple_of: 8, default: 192}
      seed:   {type: integer, min: 0}
      mood:   {type: enum, values: [plain, vivid], default: plain}
      tiled:  {type: boolean, default: false}
      guidance: {type: number, min: 0, max: 10}
      label:  {type: string, max_length: 40}
    edit: {supported: true, max_reference_images: 2}
    pricing:
      per_image: 0.001
  far-away:
    routes: [{provider: nokey, upstream_model: far}]
    pricing:
      per_image: 0.04
"""


@dataclass
class ConsoleEnv:
    live: LiveGateway
    clock: FakeClock
    database_url: str

    @property
    def url(self) -> str:
        return self.live.url

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.live.url, timeout=30, follow_redirects=False)

    def run(self, coro_fn):  # type: ignore[no-untyped-def]
        """Run a DB coroutine on a private engine, in a thread of its own: Playwright's sync
        API keeps an event loop running in the test's thread while a browser is open."""

        async def wrapped():  # type: ignore[no-untyped-def]
            engine = make_engine(self.database_url)
            try:
                return await coro_fn(engine)
            finally:
                await engine.dispose()

        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, wrapped()).result()


@pytest.fixture
def console_env(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ConsoleEnv]:
    monkeypatch.delenv("TEST_CONSOLE_UNSET_KEY", raising=False)
    catalog = write_catalog(tmp_path, CATALOG)
    clock = FakeClock(1_900_000_000.0)
    with LiveGateway(database_url=database_url, catalog_path=catalog) as live:
        live.app.state.console.codec.clock = clock  # the injected session clock
        yield ConsoleEnv(live, clock, database_url)


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert found, "the page carries no CSRF token"
    return found.group(1)


def sign_in(client: httpx.Client) -> str:
    """Sign in through the form; returns the signed-in session's CSRF token."""
    form = client.get("/console/login")
    assert form.status_code == 200
    answer = client.post(
        "/console/login",
        data={"token": ADMIN_TOKEN, "csrf_token": csrf_of(form.text), "next": "/console/"},
    )
    assert answer.status_code == 303, answer.text
    page = client.get("/console/")
    assert page.status_code == 200
    return csrf_of(page.text)


def tampered(cookie: str) -> str:
    """The cookie with one character of its signature changed (not the last one: its low
    bits are base64 padding, so some changes there decode to the same bytes)."""
    index = len(cookie) - 6
    return cookie[:index] + ("A" if cookie[index] != "A" else "B") + cookie[index + 1 :]
