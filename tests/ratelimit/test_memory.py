"""The in-process limiter: exact sliding-window arithmetic and bounded memory."""

from __future__ import annotations

import pytest

from app.errors import RateLimited
from app.ratelimit import MemoryRateLimiter, make_rate_limiter
from tests.ratelimit.conftest import FakeClock

pytestmark = pytest.mark.anyio


async def test_retry_after_is_when_the_oldest_request_leaves_the_window() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    await limiter.acquire("k", rpm=2, max_concurrency=None)  # t = 0
    clock.now += 10
    await limiter.acquire("k", rpm=2, max_concurrency=None)  # t = 10
    clock.now += 15.5

    with pytest.raises(RateLimited) as refused:  # t = 25.5: the first leaves at t = 60
        await limiter.acquire("k", rpm=2, max_concurrency=None)
    assert refused.value.retry_after == 35  # 34.5, rounded up: never come back too early
    assert "rate limit of 2 requests per minute exceeded for this key" in refused.value.message

    clock.now += 34.5
    await limiter.acquire("k", rpm=2, max_concurrency=None)


async def test_lowering_rpm_waits_for_enough_requests_to_leave() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    for _ in range(3):  # t = 0, 1, 2
        await limiter.acquire("k", rpm=3, max_concurrency=None)
        clock.now += 1
    with pytest.raises(RateLimited) as refused:  # t = 3, rpm now 1: wait for t = 2 to leave
        await limiter.acquire("k", rpm=1, max_concurrency=None)
    assert refused.value.retry_after == 59


async def test_idle_keys_are_evicted() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    for i in range(1000):
        await limiter.acquire(f"k{i}", rpm=5, max_concurrency=None)
    held = await limiter.acquire("busy", rpm=None, max_concurrency=5)
    assert len(limiter) == 1001

    clock.now += 61  # past the window, and past the next sweep
    await limiter.acquire("new", rpm=5, max_concurrency=None)
    assert len(limiter) == 2  # "busy" still holds a slot
    await held.release()
    assert len(limiter) == 1


async def test_a_concurrency_only_key_is_dropped_on_its_last_release() -> None:
    limiter = MemoryRateLimiter()
    async with await limiter.acquire("k", rpm=None, max_concurrency=2):
        assert len(limiter) == 1
    assert len(limiter) == 0


async def test_make_rate_limiter_without_redis_is_in_process() -> None:
    limiter = make_rate_limiter(None)
    assert isinstance(limiter, MemoryRateLimiter)
    await limiter.aclose()


async def test_recorded_admissions_count_and_stay_bounded() -> None:
    """`record` (admissions Redis decided) counts like `acquire`, and is swept like it."""
    clock = FakeClock()
    limiter = MemoryRateLimiter(window_s=60, clock=clock)
    for _ in range(3):
        limiter.record("k", rpm=True, concurrent=False)
    lease = limiter.record("k", rpm=False, concurrent=True)
    with pytest.raises(RateLimited):
        await limiter.acquire("k", rpm=3, max_concurrency=None)
    with pytest.raises(RateLimited):
        await limiter.acquire("k", rpm=None, max_concurrency=1)
    await lease.release()
    clock.now += 61
    for index in range(1000):
        limiter.record(f"other-{index}", rpm=True, concurrent=False)
    clock.now += 121
    limiter.record("last", rpm=True, concurrent=False)
    assert len(limiter) == 1  # everything idle for a whole window was swept
