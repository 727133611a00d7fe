"""The rate limit contract, run against both implementations (memory and Redis)."""

from __future__ import annotations

import anyio
import pytest

from app.errors import RateLimited
from app.ratelimit import UNLIMITED, Lease, RateLimiter
from tests.ratelimit.conftest import Limiters, unique_key

pytestmark = pytest.mark.anyio


async def _admitted(limiter: RateLimiter, key: str, **limits: int | None) -> bool:
    try:
        await limiter.acquire(key, rpm=limits.get("rpm"), max_concurrency=limits.get("conc"))
    except RateLimited:
        return False
    return True


async def test_rpm_allows_n_then_refuses_with_retry_after(limiters: Limiters) -> None:
    limiter, key = limiters.make(), unique_key()
    for _ in range(3):
        await limiter.acquire(key, rpm=3, max_concurrency=None)

    with pytest.raises(RateLimited) as refused:
        await limiter.acquire(key, rpm=3, max_concurrency=None)

    error = refused.value
    assert error.status == 429
    assert error.code == "RATE_LIMITED"
    assert "rate limit of 3 requests per" in error.message
    assert "exceeded for this key" in error.message
    assert error.retry_after is not None
    assert 1 <= error.retry_after <= max(1, limiters.window_s)
    assert 1 <= int(error.headers()["retry-after"]) <= max(1, limiters.window_s)


async def test_the_window_slides(limiters: Limiters) -> None:
    limiter, key, w = limiters.make(), unique_key(), limiters.window_s
    assert await _admitted(limiter, key, rpm=2)  # t = 0
    await limiters.advance(0.5 * w)
    assert await _admitted(limiter, key, rpm=2)  # t = 0.5 w
    await limiters.advance(0.1 * w)
    assert not await _admitted(limiter, key, rpm=2)  # t = 0.6 w: both still in the window

    await limiters.advance(0.5 * w)  # t = 1.1 w: the first has left, the second has not
    assert await _admitted(limiter, key, rpm=2)
    assert not await _admitted(limiter, key, rpm=2)

    await limiters.advance(0.5 * w)  # t = 1.6 w: the second has left
    assert await _admitted(limiter, key, rpm=2)


async def test_concurrent_acquires_admit_exactly_rpm(limiters: Limiters) -> None:
    limiter, key = limiters.make(), unique_key()
    results: list[bool] = []

    async def one() -> None:
        results.append(await _admitted(limiter, key, rpm=10))

    async with anyio.create_task_group() as group:
        for _ in range(30):
            group.start_soon(one)
    assert results.count(True) == 10


async def test_concurrency_cap_and_release(limiters: Limiters) -> None:
    limiter, key = limiters.make(), unique_key()
    first = await limiter.acquire(key, rpm=None, max_concurrency=2)
    second = await limiter.acquire(key, rpm=None, max_concurrency=2)

    with pytest.raises(RateLimited) as refused:
        await limiter.acquire(key, rpm=None, max_concurrency=2)
    assert refused.value.message.startswith("this key already has 2 requests in flight")
    assert refused.value.retry_after == 1

    await first.release()
    assert first.released
    third = await limiter.acquire(key, rpm=None, max_concurrency=2)
    assert not await _admitted(limiter, key, conc=2)
    await second.release()
    await third.release()


async def test_double_release_frees_only_one_slot(limiters: Limiters) -> None:
    limiter, key = limiters.make(), unique_key()
    lease = await limiter.acquire(key, rpm=None, max_concurrency=1)
    await lease.release()
    await lease.release()

    other = await limiter.acquire(key, rpm=None, max_concurrency=1)
    await lease.release()  # a stale lease must not free `other`'s slot
    assert not await _admitted(limiter, key, conc=1)
    await other.release()


async def test_context_manager_releases_on_error(limiters: Limiters) -> None:
    limiter, key = limiters.make(), unique_key()
    with pytest.raises(ValueError):
        async with await limiter.acquire(key, rpm=None, max_concurrency=1):
            raise ValueError("the upstream failed")
    async with await limiter.acquire(key, rpm=None, max_concurrency=1) as lease:
        assert isinstance(lease, Lease)


async def test_release_survives_cancellation(limiters: Limiters) -> None:
    """A client disconnect cancels the request; its slot must still come back."""
    limiter, key = limiters.make(), unique_key()
    lease = await limiter.acquire(key, rpm=None, max_concurrency=1)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await lease.release()
    assert await _admitted(limiter, key, conc=1)


async def test_refused_for_concurrency_takes_no_rpm_unit(limiters: Limiters) -> None:
    limiter, key = limiters.make(), unique_key()
    held = await limiter.acquire(key, rpm=2, max_concurrency=1)
    for _ in range(5):
        assert not await _admitted(limiter, key, rpm=2, conc=1)
    await held.release()

    assert await _admitted(limiter, key, rpm=2, conc=None)  # the 2nd of 2: refusals were free
    assert not await _admitted(limiter, key, rpm=2, conc=None)


async def test_refused_for_rpm_takes_no_concurrency_slot(limiters: Limiters) -> None:
    limiter, key = limiters.make(), unique_key()
    async with await limiter.acquire(key, rpm=1, max_concurrency=1):
        pass
    for _ in range(5):
        assert not await _admitted(limiter, key, rpm=1, conc=1)
    lease = await limiter.acquire(key, rpm=None, max_concurrency=1)  # no slot leaked
    await lease.release()


async def test_over_both_limits_reports_rpm(limiters: Limiters) -> None:
    """Waiting for a free slot would not help: the longer wait is the one to report."""
    limiter, key = limiters.make(), unique_key()
    held = await limiter.acquire(key, rpm=1, max_concurrency=1)
    with pytest.raises(RateLimited, match="rate limit of 1 requests per"):
        await limiter.acquire(key, rpm=1, max_concurrency=1)
    await held.release()


async def test_keys_are_independent(limiters: Limiters) -> None:
    limiter, a, b = limiters.make(), unique_key(), unique_key()
    assert await _admitted(limiter, a, rpm=1)
    assert not await _admitted(limiter, a, rpm=1)
    assert await _admitted(limiter, b, rpm=1)


async def test_no_limits_is_unlimited(limiters: Limiters) -> None:
    limiter, key = limiters.make(), unique_key()
    for _ in range(100):
        assert await limiter.acquire(key, rpm=None, max_concurrency=None) is UNLIMITED
    await UNLIMITED.release()


async def test_zero_limits_admit_nothing(limiters: Limiters) -> None:
    limiter, key = limiters.make(), unique_key()
    with pytest.raises(RateLimited, match="rate limit of 0 requests"):
        await limiter.acquire(key, rpm=0, max_concurrency=None)
    with pytest.raises(RateLimited, match="already has 0 requests in flight"):
        await limiter.acquire(key, rpm=None, max_concurrency=0)
