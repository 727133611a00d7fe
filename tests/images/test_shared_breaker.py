"""The circuit breaker shared through Redis: two replicas (two `Router`s, each with its own
Redis client, on the real Redis at 127.0.0.1:6379) in front of mock OpenAI upstreams over
real HTTP. A failing provider is cooled down on both, exactly one replica probes it back,
each transition is one webhook event, and the failed attempts cost the customer nothing."""

from __future__ import annotations

import asyncio
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.adapters.base import AdapterContext, ImageAdapter
from app.catalog.loader import Catalog, load_catalog
from app.db.engine import make_engine
from app.db.models import WebhookEvent
from app.gateway import build_adapters, provider_announcer
from app.images.breaker import Breaker
from app.images.routing import Router, RouteTrace
from app.images.shared_breaker import RedisCircuitBreaker
from app.ledger import Ledger
from app.webhooks.destinations import DestinationPolicy
from app.webhooks.dispatcher import DeliveryPolicy, Dispatcher
from tests.mocks.openai_upstream import MockOpenAIUpstream
from tests.support.books import assert_books_balance
from tests.support.clock import FakeClock
from tests.support.factories import make_account, make_key

pytestmark = pytest.mark.anyio

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() == "true"
KEY = "sk-mock-upstream-key"
CATALOG = """
providers:
  sick: {{adapter: openai, base_url: "{sick}", api_key: {key}, allow_private_network: true}}
  healthy: {{adapter: openai, base_url: "{healthy}", api_key: {key}, allow_private_network: true}}
models:
  gpt-image-1:
    routes: [{{provider: sick}}, {{provider: healthy}}]
    pricing: {{per_image: 0.04}}
"""
PRICE = 40_000


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        if IN_CI:
            pytest.fail(f"CI=true and Redis at {REDIS_URL} is down: {exc!r}", pytrace=False)
        pytest.skip(f"Redis at {REDIS_URL} is not reachable: {exc!r}")
    finally:
        client.close()
    yield REDIS_URL


@pytest.fixture
def upstreams() -> Iterator[tuple[MockOpenAIUpstream, MockOpenAIUpstream]]:
    with MockOpenAIUpstream(api_key=KEY) as sick, MockOpenAIUpstream(api_key=KEY) as healthy:
        yield sick, healthy


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database_url)
    yield engine
    await engine.dispose()


class Replica:
    """What one gateway process holds: its adapters, its Redis client, its Router."""

    def __init__(self, catalog: Catalog, breaker: Breaker, http: httpx.AsyncClient) -> None:
        self.catalog = catalog
        self.adapters: dict[str, ImageAdapter] = build_adapters(
            catalog, AdapterContext(http=http, max_download_bytes=10 * 1024 * 1024)
        )
        self.router = Router(breaker=breaker)

    async def paid_request(self, ledger: Ledger, account: str, key: str) -> RouteTrace:
        """What the request path does around the router: hold, call, settle (0 on failure)."""
        model = self.catalog.models["gpt-image-1"]
        request_id = "req_" + uuid.uuid4().hex
        await ledger.hold(
            request_id=request_id, account_id=account, key_id=key, model=model.id,
            amount_micros=PRICE,
        )  # fmt: skip
        trace = RouteTrace()
        try:
            await self.router.call(
                model_id=model.id,
                config=model.config,
                adapters=self.adapters,
                providers=self.catalog.providers,
                request=model.validate({"model": model.id, "prompt": "a cat"}).request,
                trace=trace,
            )
        except BaseException:
            await ledger.settle(request_id=request_id, cost_micros=0, images=0, status_code=503)
            raise
        await ledger.settle(request_id=request_id, cost_micros=PRICE, images=1)
        return trace


async def test_two_replicas_share_the_cooldown_and_one_probe(
    tmp_path: Path,
    redis_url: str,
    engine: AsyncEngine,
    upstreams: tuple[MockOpenAIUpstream, MockOpenAIUpstream],
) -> None:
    sick, healthy = upstreams
    catalog_path = tmp_path / "models.yaml"
    catalog_path.write_text(CATALOG.format(sick=sick.base_url, healthy=healthy.base_url, key=KEY))
    catalog = load_catalog(catalog_path, {})
    clock = FakeClock(1_800_000_000.0)
    dispatcher = Dispatcher(
        engine, httpx.AsyncClient(), destinations=DestinationPolicy(), policy=DeliveryPolicy()
    )
    prefix = f"igw-test:{secrets.token_hex(4)}:breaker"

    def breaker() -> RedisCircuitBreaker:  # each replica: its own Redis client
        return RedisCircuitBreaker(
            redis.asyncio.Redis.from_url(redis_url),
            failure_threshold=3,
            cooldown_s=30,
            clock=clock,
            on_transition=provider_announcer(dispatcher),
            key_prefix=prefix,
        )

    ledger = Ledger(engine)
    account = await make_account(engine, 100 * PRICE)
    key, _ = await make_key(engine, account)
    async with httpx.AsyncClient() as http:
        a, b = Replica(catalog, breaker(), http), Replica(catalog, breaker(), http)
        try:
            sick.fail_rate = 1.0
            traces = [await r.paid_request(ledger, account, key) for r in (a, b, a)]
            assert [str(t) for t in traces] == ["sick:UPSTREAM_ERROR>healthy:ok"] * 3
            # three failures counted across both replicas: cooled down for both
            for replica in (a, b):
                assert await replica.router.breaker.state("sick") == "open"
                trace = await replica.paid_request(ledger, account, key)
                assert str(trace) == "sick:SKIPPED_COOLDOWN>healthy:ok"
            assert len(sick.requests) == 3

            clock.now += 31  # half-open: the two replicas race, one probe reaches `sick`
            sick.fail_rate, sick.latency_s = 0.0, 0.3
            probes = await asyncio.gather(
                a.paid_request(ledger, account, key), b.paid_request(ledger, account, key)
            )
            assert sorted(str(t) for t in probes) == ["sick:SKIPPED_COOLDOWN>healthy:ok", "sick:ok"]
            assert len(sick.requests) == 4
            for replica in (a, b):  # recovered for both
                assert await replica.router.breaker.state("sick") == "closed"
                assert str(await replica.paid_request(ledger, account, key)) == "sick:ok"
        finally:
            for replica in (a, b):
                await replica.router.breaker.aclose()
            await dispatcher.client.aclose()

    async with engine.connect() as conn:
        announced = (
            (await conn.execute(select(WebhookEvent.event_type).order_by(WebhookEvent.created_at)))
            .scalars()
            .all()
        )
    assert announced == ["provider.cooled_down", "provider.recovered"]
    # 9 requests, every one answered: exactly 9 prices charged, failed attempts cost nothing
    assert await assert_books_balance(engine, account) == 100 * PRICE - 9 * PRICE


async def test_a_breaker_whose_redis_is_away_fails_open() -> None:
    from tests.support.processes import free_port

    away = RedisCircuitBreaker.from_url(f"redis://127.0.0.1:{free_port()}/0", failure_threshold=1)
    try:
        await away.record_failure("p")  # logged, not raised
        assert await away.try_acquire("p") is True
        assert await away.state("p") == "closed"
        await away.record_success("p")
        await away.release_probe("p")
    finally:
        await away.aclose()
