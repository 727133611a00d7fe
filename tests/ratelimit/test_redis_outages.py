"""The Redis limiter across lost replies and outages, through a loopback proxy the test can cut.

One replica (`via_proxy`) reaches the real Redis through a `TcpProxy`; the other (`direct`)
talks to it straight, as a second gateway process would. Each test uses its own key under
this run's prefix.

- A lost reply to the acquire script must not leave a slot taken: redis-py resends the script
  once (same member), which used to find the slot taken by its own first run and refuse the
  request, leaving the slot held for the whole lease TTL (15 min) on every replica.
- If nothing answers at all, the slot the script may have taken is forgotten as soon as Redis
  is back.
- What a replica admitted on its own while Redis was away is merged back, so the key cannot
  exceed its rpm in one window across the switch.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest
from redis.asyncio import Redis

from app.errors import RateLimited
from app.ratelimit import RedisRateLimiter
from tests.ratelimit.conftest import PREFIX, unique_key
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.anyio

#: long enough that expiry cannot be what frees a slot during a test
LEASE_TTL_S = 600.0


@pytest.fixture
def proxy(redis_url: str) -> Iterator[TcpProxy]:
    from redis.connection import parse_url

    target = parse_url(redis_url)
    with TcpProxy((str(target.get("host", "127.0.0.1")), int(target.get("port", 6379)))) as p:
        yield p


def _through(proxy: TcpProxy, redis_url: str) -> str:
    database = redis_url.rsplit("/", 1)[-1] if redis_url.count("/") > 2 else "0"
    return f"redis://127.0.0.1:{proxy.port}/{database}"


@pytest.fixture
async def via_proxy(proxy: TcpProxy, redis_url: str) -> AsyncIterator[RedisRateLimiter]:
    limiter = RedisRateLimiter.from_url(
        _through(proxy, redis_url),
        key_prefix=PREFIX,
        lease_ttl_s=LEASE_TTL_S,
        retry_after_failure_s=0.2,
        timeout_s=0.5,
    )
    # one round trip first: the connection's handshake and the script's loading are done, so
    # the next reply through the proxy is the acquire script's own
    await (await limiter.acquire(unique_key(), rpm=None, max_concurrency=1)).release()
    yield limiter
    proxy.restore()
    await limiter.aclose()


@pytest.fixture
async def direct(redis_url: str) -> AsyncIterator[RedisRateLimiter]:
    limiter = RedisRateLimiter.from_url(redis_url, key_prefix=PREFIX, lease_ttl_s=LEASE_TTL_S)
    yield limiter
    await limiter.aclose()


async def until_shared_again(limiter: RedisRateLimiter, within_s: float = 10) -> None:
    """Wait (generously) for the limiter to reconcile with Redis by itself."""
    for _ in range(int(within_s / 0.05)):
        if not limiter.degraded:
            return
        await anyio.sleep(0.05)


async def eventually_admitted(limiter: RedisRateLimiter, key: str, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while True:
        try:
            lease = await limiter.acquire(key, rpm=None, max_concurrency=1)
        except RateLimited:
            if time.monotonic() > deadline:
                raise
            await anyio.sleep(0.1)
            continue
        await lease.release()
        return


async def test_a_lost_reply_is_retried_without_counting_twice(
    proxy: TcpProxy, via_proxy: RedisRateLimiter, direct: RedisRateLimiter, redis_client: Redis
) -> None:
    key = unique_key()
    proxy.drop_next_reply()  # the script runs; its answer never arrives; the resend does
    lease = await via_proxy.acquire(key, rpm=None, max_concurrency=1)
    assert proxy.dropped == 1
    assert not via_proxy.degraded  # admitted by Redis, not by a local fallback
    _, conc_key = via_proxy.keys_for(key)
    assert await redis_client.zcard(conc_key) == 1  # one slot, held by this request
    with pytest.raises(RateLimited):
        await direct.acquire(key, rpm=None, max_concurrency=1)

    await lease.release()
    assert await redis_client.zcard(conc_key) == 0
    lease = await direct.acquire(key, rpm=None, max_concurrency=1)  # at once, not in 15 min
    await lease.release()


async def test_an_unanswered_acquire_leaks_no_slot(
    proxy: TcpProxy, via_proxy: RedisRateLimiter, direct: RedisRateLimiter, redis_client: Redis
) -> None:
    key = unique_key()
    _, conc_key = via_proxy.keys_for(key)
    proxy.drop_next_reply(then_freeze=True)  # the script ran; nothing answers any more
    lease = await via_proxy.acquire(key, rpm=None, max_concurrency=1)  # served locally
    assert via_proxy.degraded
    assert await redis_client.zcard(conc_key) == 1  # the orphan the script took
    await lease.release()  # the request is over

    proxy.restore()
    # no further request on that replica is needed: it forgets the orphan by itself
    await eventually_admitted(direct, key, within_s=10)
    assert not via_proxy.degraded
    assert await redis_client.zcard(conc_key) == 0


async def test_a_lease_held_across_an_outage_is_moved_into_redis(
    proxy: TcpProxy, via_proxy: RedisRateLimiter, direct: RedisRateLimiter, redis_client: Redis
) -> None:
    key = unique_key()
    _, conc_key = via_proxy.keys_for(key)
    proxy.cut()
    lease = await via_proxy.acquire(key, rpm=None, max_concurrency=1)  # local: Redis is gone
    assert via_proxy.degraded
    with pytest.raises(RateLimited):  # this process still applies the limit on its own
        await via_proxy.acquire(key, rpm=None, max_concurrency=1)
    proxy.restore()

    await until_shared_again(via_proxy)
    assert await redis_client.zcard(conc_key) == 1  # the running request holds the slot
    with pytest.raises(RateLimited):
        await direct.acquire(key, rpm=None, max_concurrency=1)
    await lease.release()
    assert await redis_client.zcard(conc_key) == 0
    lease = await direct.acquire(key, rpm=None, max_concurrency=1)
    await lease.release()


async def test_the_local_fallback_is_merged_back_so_rpm_holds_across_the_switch(
    proxy: TcpProxy, redis_url: str, direct: RedisRateLimiter, redis_client: Redis
) -> None:
    rpm = 5
    via = RedisRateLimiter.from_url(
        _through(proxy, redis_url),
        key_prefix=PREFIX,
        window_s=60,
        retry_after_failure_s=0.2,
        timeout_s=0.5,
    )
    direct_60 = RedisRateLimiter.from_url(redis_url, key_prefix=PREFIX, window_s=60)
    key = unique_key()
    rpm_key, _ = via.keys_for(key)
    admitted = 0

    async def attempt(limiter: RedisRateLimiter) -> bool:
        nonlocal admitted
        try:
            await limiter.acquire(key, rpm=rpm, max_concurrency=None)
        except RateLimited:
            return False
        admitted += 1
        return True

    try:
        await (await via.acquire(unique_key(), rpm=None, max_concurrency=1)).release()
        assert await attempt(via) and await attempt(via)  # through Redis
        proxy.cut()
        # Redis is away: this replica decides alone, knowing its own two
        results = [await attempt(via) for _ in range(5)]
        assert via.degraded
        assert results == [True, True, True, False, False]
        proxy.restore()
        await until_shared_again(via)
        assert not via.degraded
        assert await redis_client.zcard(rpm_key) == rpm  # 2 + the 3 served locally
        # any replica now sees a full window
        for limiter in (direct_60, via):
            assert not await attempt(limiter)
        assert admitted == rpm
    finally:
        await via.aclose()
        await direct_60.aclose()
