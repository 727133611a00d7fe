"""The Redis limiter: one limit across replicas, lease expiry, key hygiene, Redis failures."""

from __future__ import annotations

import logging
from typing import Any, NoReturn

import anyio
import pytest
from redis.asyncio import Redis

from app.errors import RateLimited
from app.ratelimit import UNLIMITED, RateLimiter, RedisRateLimiter, make_rate_limiter
from tests.ratelimit.conftest import PREFIX, PrivateRedis, unique_key

pytestmark = pytest.mark.anyio


async def _count_admitted(
    limiters: list[RateLimiter], key: str, attempts: int, **limits: Any
) -> int:
    admitted = 0

    async def one(limiter: RateLimiter) -> None:
        nonlocal admitted
        try:
            await limiter.acquire(key, **limits)
        except RateLimited:
            return
        admitted += 1

    async with anyio.create_task_group() as group:
        for i in range(attempts):
            group.start_soon(one, limiters[i % len(limiters)])
    return admitted


@pytest.fixture
async def replicas(redis_url: str) -> Any:
    """Two limiters with their own connections: two gateway processes sharing one Redis."""
    pair = [
        RedisRateLimiter.from_url(redis_url, key_prefix=PREFIX, lease_ttl_s=0.5),
        RedisRateLimiter.from_url(redis_url, key_prefix=PREFIX, lease_ttl_s=0.5),
    ]
    yield pair
    for limiter in pair:
        await limiter.aclose()


async def test_replicas_share_one_rpm_limit(replicas: list[RateLimiter]) -> None:
    key = unique_key()
    admitted = await _count_admitted(replicas, key, 30, rpm=10, max_concurrency=None)
    assert admitted == 10


async def test_replicas_share_one_concurrency_limit(replicas: list[RateLimiter]) -> None:
    key = unique_key()
    admitted = await _count_admitted(replicas, key, 30, rpm=None, max_concurrency=3)
    assert admitted == 3


async def test_a_crashed_replicas_lease_expires(replicas: list[RateLimiter]) -> None:
    key = unique_key()
    crashed, survivor = replicas
    await crashed.acquire(key, rpm=None, max_concurrency=1)  # never released
    with pytest.raises(RateLimited):
        await survivor.acquire(key, rpm=None, max_concurrency=1)
    await anyio.sleep(0.6)  # while its process lives, the heartbeat keeps the lease
    with pytest.raises(RateLimited):
        await survivor.acquire(key, rpm=None, max_concurrency=1)

    await crashed.aclose()  # the process is gone: nothing renews the lease any more

    await anyio.sleep(0.6)  # lease_ttl_s = 0.5
    lease = await survivor.acquire(key, rpm=None, max_concurrency=1)
    await lease.release()


async def test_keys_are_namespaced_and_expire(redis_url: str, redis_client: Redis) -> None:
    limiter = RedisRateLimiter.from_url(redis_url, key_prefix=PREFIX, window_s=60, lease_ttl_s=900)
    key = unique_key()
    rpm_key, conc_key = limiter.keys_for(key)
    assert (rpm_key, conc_key) == (f"{PREFIX}:{{{key}}}:rpm", f"{PREFIX}:{{{key}}}:conc")

    lease = await limiter.acquire(key, rpm=5, max_concurrency=5)
    assert 0 < await redis_client.pttl(rpm_key) <= 60_000
    assert 0 < await redis_client.pttl(conc_key) <= 900_000
    assert await redis_client.zcard(conc_key) == 1

    await lease.release()
    assert not await redis_client.exists(conc_key)  # an empty sorted set is deleted
    await limiter.aclose()


async def test_default_prefix() -> None:
    limiter = make_rate_limiter("redis://127.0.0.1:1")
    assert isinstance(limiter, RedisRateLimiter)
    assert limiter.keys_for("k1") == ("igw:rl:{k1}:rpm", "igw:rl:{k1}:conc")
    await limiter.aclose()


class _NoCallsRedis:
    """Fails the test on any Redis command."""

    def register_script(self, script: str) -> Any:
        async def run(*args: Any, **kwargs: Any) -> NoReturn:
            raise AssertionError("the script was run")

        return run

    def __getattr__(self, name: str) -> NoReturn:
        raise AssertionError(f"Redis.{name} was used")


async def test_unlimited_makes_no_redis_call() -> None:
    limiter = RedisRateLimiter(_NoCallsRedis())  # type: ignore[arg-type]
    lease = await limiter.acquire("k", rpm=None, max_concurrency=None)
    assert lease is UNLIMITED
    await lease.release()


async def test_rpm_only_lease_needs_no_release_call(redis_url: str) -> None:
    limiter = RedisRateLimiter.from_url(redis_url, key_prefix=PREFIX)
    lease = await limiter.acquire(unique_key(), rpm=5, max_concurrency=None)
    assert lease is UNLIMITED
    await limiter.aclose()


async def test_redis_down_degrades_to_per_process_limits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limiter = RedisRateLimiter.from_url("redis://127.0.0.1:1", retry_after_failure_s=60)
    key = unique_key()
    with caplog.at_level(logging.WARNING, logger="app.ratelimit.redis"):
        admitted = 0
        for _ in range(20):
            try:
                await limiter.acquire(key, rpm=5, max_concurrency=None)
                admitted += 1
            except RateLimited:
                pass
        lease = await limiter.acquire(unique_key(), rpm=None, max_concurrency=1)
        await lease.release()
    await limiter.aclose()

    assert admitted == 5  # requests still flow, and this process still applies the limit
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # one warning, not one per request
    assert "Redis rate limiter unavailable" in warnings[0].getMessage()


async def test_back_to_redis_after_a_restart(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """The restarted server has neither our keys nor our script (NOSCRIPT): both recover, and
    the request admitted locally while it was down is merged back."""
    limiter = RedisRateLimiter.from_url(private_redis.url, retry_after_failure_s=0.1)
    raw = Redis.from_url(private_redis.url)
    key = unique_key()
    rpm_key, _ = limiter.keys_for(key)
    await limiter.acquire(key, rpm=5, max_concurrency=None)
    assert await raw.zcard(rpm_key) == 1

    private_redis.stop()
    with caplog.at_level(logging.INFO, logger="app.ratelimit.redis"):
        await limiter.acquire(key, rpm=5, max_concurrency=None)  # served locally
        private_redis.start()
        await anyio.sleep(0.15)
        await limiter.acquire(key, rpm=5, max_concurrency=None)
    await raw.aclose()
    raw = Redis.from_url(private_redis.url)
    assert await raw.zcard(rpm_key) == 2  # the one served locally, and the one after
    assert "answers again" in caplog.text
    await raw.aclose()
    await limiter.aclose()


async def test_noscript_reloads_the_script(private_redis: PrivateRedis) -> None:
    limiter = RedisRateLimiter.from_url(private_redis.url)
    raw = Redis.from_url(private_redis.url)
    key = unique_key()
    await limiter.acquire(key, rpm=2, max_concurrency=None)
    await raw.script_flush()
    await limiter.acquire(key, rpm=2, max_concurrency=None)
    with pytest.raises(RateLimited):
        await limiter.acquire(key, rpm=2, max_concurrency=None)
    await raw.aclose()
    await limiter.aclose()


async def test_release_reconnects_even_when_cancelled(redis_url: str) -> None:
    """Reconnecting takes awaits a cancelled request would not survive without a shield."""
    client = Redis.from_url(redis_url)
    limiter = RedisRateLimiter(client, key_prefix=PREFIX)
    key = unique_key()
    lease = await limiter.acquire(key, rpm=None, max_concurrency=1)
    await client.connection_pool.disconnect()  # the release must open a new connection

    with anyio.CancelScope() as scope:
        scope.cancel()
        await lease.release()

    again = await limiter.acquire(key, rpm=None, max_concurrency=1)
    await again.release()
    await client.aclose()
