"""End-to-end fixtures: a live gateway (real HTTP) in front of a real-HTTP mock OpenAI upstream,
on SQLite and on Postgres, driven by the official `openai` SDK."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.engine import make_engine
from tests.mocks.openai_upstream import MockOpenAIUpstream
from tests.support import factories
from tests.support.books import assert_books_balance
from tests.support.live import ADMIN_TOKEN, LiveGateway, write_catalog

UPSTREAM_KEY = "sk-upstream-secret-0123456789"

CATALOG = """
providers:
  local:
    adapter: local-preview
  mockai:
    adapter: openai
    allow_private_network: true
    base_url: {upstream}
    api_key: ${{TEST_MOCK_UPSTREAM_KEY}}
  nokey:
    adapter: openai
    base_url: {upstream}
    api_key: ${{TEST_UNSET_VARIABLE_FOR_HIDDEN_MODEL}}
{extra_providers}
models:
  local-preview:
    owned_by: image-gateway
    routes: [{{provider: local}}]
    prompt_max_length: 1000
    max_n: 4
    output_formats: [png, jpeg, webp]
    parameters:
      width:  {{type: integer, min: 64, max: 2048, multiple_of: 8, default: 256}}
      height: {{type: integer, min: 64, max: 2048, multiple_of: 8, default: 256}}
      seed:   {{type: integer, min: 0}}
    edit: {{supported: true, max_reference_images: 4}}
    pricing:
      per_image: 0.001
  gpt-image-1:
    owned_by: openai
    routes: [{{provider: mockai}}]
    max_n: 4
    output_formats: [png, jpeg, webp]
    parameters:
      image_size: {{type: enum, values: [auto, 1024x1024, 1536x1024, 1024x1536], default: auto}}
      quality: {{type: enum, values: [low, medium, high, auto], default: auto}}
    pricing:
      per_image:
        by: [quality, image_size]
        values:
          low:    {{auto: 0.016, 1024x1024: 0.011, 1536x1024: 0.016, 1024x1536: 0.016}}
          medium: {{auto: 0.063, 1024x1024: 0.042, 1536x1024: 0.063, 1024x1536: 0.063}}
          high:   {{auto: 0.25, 1024x1024: 0.167, 1536x1024: 0.25, 1024x1536: 0.25}}
          auto:   {{auto: 0.25, 1024x1024: 0.167, 1536x1024: 0.25, 1024x1536: 0.25}}
  vendor/tier-model:
    owned_by: vendor
    routes: [{{provider: mockai, upstream_model: tier-upstream}}]
    max_n: 2
    output_formats: [png, jpeg]
    parameters:
      aspect_ratio: {{type: enum, values: [auto, "1:1", "16:9", "9:16"], default: auto}}
      resolution: {{type: enum, values: [1K, 2K], default: 1K}}
    pricing:
      per_image: {{by: resolution, values: {{1K: 0.134, 2K: 0.2}}}}
  aspect-model:
    routes: [{{provider: mockai}}]
    parameters:
      aspect_ratio: {{type: enum, values: ["1:1", "16:9", "9:16"], default: "1:1"}}
    pricing:
      per_image: 0.02
  pixel-model:
    routes: [{{provider: mockai}}]
    output_formats: [png, webp]
    parameters:
      width:  {{type: integer, min: 256, max: 1536, multiple_of: 16, default: 1024}}
      height: {{type: integer, min: 256, max: 1536, multiple_of: 16, default: 1024}}
    pricing:
      per_megapixel: 0.01
  hidden-model:
    routes: [{{provider: nokey}}]
    pricing:
      per_image: 0.01
{extra_models}
"""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "gateway(settings=None, providers='', models=''): the `env` gateway's Settings "
        "overrides, and catalog YAML appended to the providers / models sections",
    )


@dataclass
class Env:
    gateway: LiveGateway
    upstream: MockOpenAIUpstream
    database_url: str
    catalog_path: Path
    account_id: str
    key_id: str
    secret: str

    def client(self, secret: str | None = None, **kwargs: object) -> openai.OpenAI:
        kwargs.setdefault("max_retries", 0)
        return openai.OpenAI(
            base_url=self.gateway.base_url,
            api_key=secret or self.secret,
            **kwargs,  # type: ignore[arg-type]
        )

    def admin(self) -> httpx.Client:
        """An httpx client on `/admin/v1` with the admin token (close it, or use `with`)."""
        return httpx.Client(
            base_url=f"{self.gateway.url}/admin/v1",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=30,
        )

    def run(self, coro):  # type: ignore[no-untyped-def]
        """Run a DB coroutine (factories, checks) on a private engine in this thread."""

        async def wrapped():  # type: ignore[no-untyped-def]
            engine = make_engine(self.database_url)
            try:
                return await coro(engine)
            finally:
                await engine.dispose()

        return asyncio.run(wrapped())


async def assert_all_books_closed(engine: AsyncEngine) -> None:
    """After a test: every account's books balance, and no money or idempotency key is left
    half-way (no `pending` request, no `in_progress` Idempotency-Key)."""
    async with engine.connect() as connection:
        account_ids = (await connection.execute(text("SELECT id FROM accounts"))).scalars().all()
        pending = (
            (await connection.execute(text("SELECT id FROM request_log WHERE state = 'pending'")))
            .scalars()
            .all()
        )
        in_progress = (
            (
                await connection.execute(
                    text("SELECT idem_key FROM idempotency_records WHERE state = 'in_progress'")
                )
            )
            .scalars()
            .all()
        )
    for account_id in account_ids:
        await assert_books_balance(engine, account_id)
    assert not pending, f"requests left pending: {pending}"
    assert not in_progress, f"Idempotency-Keys left in progress: {in_progress}"


@pytest.fixture
def upstream() -> Iterator[MockOpenAIUpstream]:
    with MockOpenAIUpstream(api_key=UPSTREAM_KEY) as mock:
        yield mock


@pytest.fixture
def env(
    request: pytest.FixtureRequest,
    database_url: str,
    upstream: MockOpenAIUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Env]:
    """A seeded account and key and a live gateway; afterwards, every account's books are
    checked (`assert_all_books_closed`) once the gateway has shut down."""
    marker = request.node.get_closest_marker("gateway")
    options: dict[str, Any] = dict(marker.kwargs) if marker else {}
    monkeypatch.setenv("TEST_MOCK_UPSTREAM_KEY", UPSTREAM_KEY)
    monkeypatch.delenv("TEST_UNSET_VARIABLE_FOR_HIDDEN_MODEL", raising=False)
    catalog = write_catalog(
        tmp_path,
        CATALOG.format(
            upstream=upstream.base_url,
            extra_providers=options.get("providers", "").replace("{upstream}", upstream.base_url),
            extra_models=options.get("models", ""),
        ),
    )

    async def seed(engine):  # type: ignore[no-untyped-def]
        account_id = await factories.make_account(engine, balance_micros=10_000_000)
        key_id, secret = await factories.make_key(engine, account_id)
        return account_id, key_id, secret

    env = Env(None, upstream, database_url, catalog, "", "", "")  # type: ignore[arg-type]
    env.account_id, env.key_id, env.secret = env.run(seed)
    with LiveGateway(
        database_url=database_url, catalog_path=catalog, **options.get("settings", {})
    ) as gateway:
        env.gateway = gateway
        yield env
        # Both servers take ~0.15 s to stop (uvicorn's 0.1 s ticks): stop them side by side.
        # Anything still in flight to the upstream fails and is refunded, as in production.
        upstream_stopping = threading.Thread(target=upstream.stop)
        upstream_stopping.start()
    upstream_stopping.join()
    env.run(assert_all_books_closed)
