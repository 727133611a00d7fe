from __future__ import annotations

import pytest

from app.errors import RateLimited
from app.security.throttle import FailureThrottle
from tests.support.clock import FakeClock


def throttle(clock: FakeClock, **kwargs: object) -> FailureThrottle:
    options: dict[str, object] = {"what": "test", "burst": 3, "refill_s": 10.0, **kwargs}
    return FailureThrottle(clock=clock, **options)  # type: ignore[arg-type]


def test_a_burst_of_failures_then_429_with_retry_after() -> None:
    clock = FakeClock()
    limiter = throttle(clock)
    for _ in range(3):
        limiter.check("10.0.0.1")
        limiter.record_failure("10.0.0.1")
    with pytest.raises(RateLimited) as caught:
        limiter.check("10.0.0.1")
    assert caught.value.status == 429 and caught.value.code == "RATE_LIMITED"
    assert caught.value.headers()["retry-after"] == "10"
    limiter.check("10.0.0.2")  # other addresses are not affected


def test_the_budget_refills_with_time() -> None:
    clock = FakeClock()
    limiter = throttle(clock)
    for _ in range(3):
        limiter.record_failure("a")
    clock.advance(5)
    with pytest.raises(RateLimited) as caught:
        limiter.check("a")
    assert caught.value.headers()["retry-after"] == "5"
    clock.advance(5)
    limiter.check("a")  # one failure allowed again
    limiter.record_failure("a")
    with pytest.raises(RateLimited):
        limiter.check("a")
    clock.advance(30)  # fully recovered: the address is forgotten
    limiter.check("a")
    assert len(limiter._buckets) == 0


def test_the_table_of_addresses_is_bounded() -> None:
    limiter = throttle(FakeClock(), max_addresses=100)
    for i in range(1000):
        limiter.record_failure(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter._buckets) == 100


def test_nonsense_configuration_is_refused() -> None:
    with pytest.raises(ValueError):
        throttle(FakeClock(), burst=0)
