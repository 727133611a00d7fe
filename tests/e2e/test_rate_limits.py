"""Per-key rate limits (SPEC 2 and 4) as the SDK meets them: rpm, concurrency, and rpm shared
through Redis by two gateway processes.

A refused request is a 429 `RATE_LIMITED` with `Retry-After`, costs nothing and is logged
`unbilled`. Clients here use `max_retries=0` (the SDK's default retries obey `Retry-After`
and would hide the 429), except the one test about exactly that.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest
import redis

from tests.e2e.conftest import Env
from tests.support import factories
from tests.support.books import assert_books_balance
from tests.support.processes import GatewayProcess

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PRICE = 1_000  # local-preview, one image


def books(env: Env) -> int:
    async def read(engine):  # type: ignore[no-untyped-def]
        return await assert_books_balance(engine, env.account_id)

    return int(env.run(read))


def make_key(env: Env, **limits: Any) -> tuple[str, str]:
    async def make(engine):  # type: ignore[no-untyped-def]
        return await factories.make_key(engine, env.account_id, **limits)

    key_id, secret = env.run(make)
    return key_id, secret


def unbilled(env: Env, key_id: str) -> list[dict[str, Any]]:
    with env.admin() as admin:
        response = admin.get("/requests", params={"key_id": key_id, "state": "unbilled"})
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["data"]
    return rows


def assert_rate_limited(error: openai.RateLimitError, *, max_retry_after: int) -> None:
    assert error.status_code == 429
    assert error.code == "RATE_LIMITED"
    assert error.type == "rate_limit_error"  # type: ignore[attr-defined]
    retry_after = int(error.response.headers["retry-after"])
    assert 1 <= retry_after <= max_retry_after
    # a 429 is worth retrying (later): never marked otherwise
    assert error.response.headers.get("x-should-retry") != "false"


def test_rpm_refuses_the_third_call_free_of_charge(env: Env) -> None:
    key_id, secret = make_key(env, rpm=2)
    before = books(env)
    client = env.client(secret)
    for _ in range(2):
        client.images.generate(model="local-preview", prompt="x")
    with pytest.raises(openai.RateLimitError) as info:
        client.images.generate(model="local-preview", prompt="x")
    assert_rate_limited(info.value, max_retry_after=60)
    assert books(env) == before - 2 * PRICE
    [logged] = unbilled(env, key_id)
    assert logged["id"] == info.value.response.headers["x-request-id"]
    assert (logged["status"], logged["error_code"], logged["cost"], logged["held"]) == (
        429,
        "RATE_LIMITED",
        0,
        0,
    )
    # another key of the same account has its own budget
    env.client().images.generate(model="local-preview", prompt="x")


def test_concurrency_limit_refuses_the_second_call_in_flight(env: Env) -> None:
    key_id, secret = make_key(env, max_concurrency=1)
    env.upstream.latency_s = 0.5
    before = books(env)
    client = env.client(secret)
    results: list[Any] = []
    first = threading.Thread(
        target=lambda: results.append(client.images.generate(model="aspect-model", prompt="x"))
    )
    first.start()
    deadline = time.monotonic() + 5
    while not env.upstream.requests:  # the first call holds the slot, at the provider
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with pytest.raises(openai.RateLimitError) as info:
        client.images.generate(model="aspect-model", prompt="x")
    assert_rate_limited(info.value, max_retry_after=1)
    first.join(10)
    assert len(results) == 1 and results[0].data[0].b64_json
    assert len(env.upstream.requests) == 1
    assert books(env) == before - 20_000  # aspect-model: $0.02, once
    assert [row["error_code"] for row in unbilled(env, key_id)] == ["RATE_LIMITED"]
    # the slot is free again
    client.images.generate(model="local-preview", prompt="x")


def test_the_sdk_retries_after_retry_after(env: Env) -> None:
    """With its default retries the SDK waits out `Retry-After` and gets through."""
    key_id, secret = make_key(env, max_concurrency=1)
    env.upstream.latency_s = 0.5
    before = books(env)
    first = threading.Thread(
        target=lambda: env.client(secret).images.generate(model="aspect-model", prompt="x")
    )
    first.start()
    while not env.upstream.requests:
        time.sleep(0.01)
    started = time.monotonic()
    result = env.client(secret, max_retries=2).images.generate(model="aspect-model", prompt="y")
    waited = time.monotonic() - started
    first.join(10)
    assert result.data[0].b64_json
    assert waited >= 0.9  # Retry-After: 1
    assert [row["status"] for row in unbilled(env, key_id)] == [429]
    assert books(env) == before - 2 * 20_000


def test_a_failed_request_gives_its_slot_back(env: Env) -> None:
    _, secret = make_key(env, max_concurrency=1)
    client = env.client(secret)
    env.upstream.fail_next(500)
    with pytest.raises(openai.InternalServerError):
        client.images.generate(model="aspect-model", prompt="x")
    assert client.images.generate(model="aspect-model", prompt="x").data[0].b64_json


def test_idempotent_replays_do_not_use_up_the_rpm(env: Env) -> None:
    _, secret = make_key(env, rpm=1)
    client = env.client(secret)
    headers = {"Idempotency-Key": "once"}
    first = client.images.generate(model="local-preview", prompt="x", extra_headers=headers)
    replay = client.images.generate(model="local-preview", prompt="x", extra_headers=headers)
    assert replay.data[0].b64_json == first.data[0].b64_json
    with pytest.raises(openai.RateLimitError):
        client.images.generate(model="local-preview", prompt="x")


# -- shared through Redis -------------------------------------------------------------------
@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and Redis at {REDIS_URL} is not reachable: {exc!r}")
        pytest.skip(f"Redis at {REDIS_URL} is not reachable: {exc!r}")
    finally:
        client.close()
    yield REDIS_URL


@pytest.fixture
def second_gateway(env: Env, redis_url: str, tmp_path: Path) -> Iterator[GatewayProcess]:
    """Another gateway *process* on the same database and Redis as `env.gateway`."""
    process = GatewayProcess(
        database_url=env.database_url,
        catalog=env.catalog_path,
        log_dir=tmp_path,
        REDIS_URL=redis_url,
    ).start()
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


@pytest.mark.gateway(settings={"redis_url": REDIS_URL})
def test_rpm_is_shared_by_two_processes_through_redis(
    env: Env, second_gateway: GatewayProcess
) -> None:
    # a fresh key id: its Redis counters cannot be left over from another run
    key_id, secret = make_key(env, rpm=5, name=f"shared-{uuid.uuid4().hex[:8]}")
    before = books(env)
    clients = [
        env.client(secret),
        openai.OpenAI(base_url=f"{second_gateway.url}/v1", api_key=secret, max_retries=0),
    ]

    def call(index: int) -> str:
        try:
            clients[index % 2].images.generate(model="local-preview", prompt=f"p{index}")
        except openai.RateLimitError as error:
            assert_rate_limited(error, max_retry_after=60)
            return "429"
        return "200"

    with ThreadPoolExecutor(max_workers=12) as pool:
        outcomes = Counter(pool.map(call, range(12)))
    # each process alone would admit 5 of its 6 calls: 10 in all
    assert outcomes == {"200": 5, "429": 7}
    assert books(env) == before - 5 * PRICE
    assert len(unbilled(env, key_id)) == 7
