"""What a rate limiter promises, and the `Lease` an admitted request holds.

Every API key may carry two independent limits (SPEC section 4):

* **rpm**: at most N requests admitted in any sliding window of `window_s` seconds (60 by
  default, so "requests per minute"). A refused request does not count.
* **max_concurrency**: at most N admitted requests in flight at once. Admission takes a slot;
  `Lease.release()` gives it back.

`RateLimiter.acquire` checks both and takes both *together*: a request refused by either limit
takes nothing from the other, so refusals never eat into the caller's budget. Over a limit it
raises `RateLimited` (429 with `Retry-After`); the message says which limit was hit. A `None`
limit is unlimited; with both `None` the call returns `UNLIMITED` without any I/O.

Implementations: `memory.MemoryRateLimiter` (one process) and `redis.RedisRateLimiter` (shared
by every replica). Both implement exactly the same semantics, so setting `REDIS_URL` changes
where the counters live, not what the limits mean. Both refuse only through `rpm_exceeded` and
`concurrency_exceeded` below, which is where refusals are counted
(`image_gateway_rate_limit_refusals_total{limit}`).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Protocol, Self

from app.errors import RateLimited
from app.observability.metrics import RATE_LIMIT_REFUSALS

DEFAULT_WINDOW_S = 60.0

#: A concurrency slot frees when some other request finishes, which we cannot predict; image
#: requests take seconds, so "try again in a second" is the honest, cheap answer.
CONCURRENCY_RETRY_AFTER_S = 1.0


class Lease:
    """An admitted request's hold on its key's concurrency slot.

    Release it exactly once, by `async with lease:` or `await lease.release()`; further calls
    are no-ops, so a `finally` that releases again cannot free someone else's slot.
    """

    __slots__ = ("_release",)

    def __init__(self, release: Callable[[], Awaitable[None]] | None = None) -> None:
        self._release = release

    @property
    def released(self) -> bool:
        return self._release is None

    async def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            await release()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.release()


#: Returned when there is no slot to give back (no concurrency limit): releasing it is free.
UNLIMITED = Lease()


class RateLimiter(Protocol):
    async def acquire(self, key_id: str, *, rpm: int | None, max_concurrency: int | None) -> Lease:
        """Admit one request for `key_id` or raise `RateLimited`."""
        ...

    async def aclose(self) -> None:
        """Free the limiter's resources (connections); call once at shutdown."""
        ...


def rpm_exceeded(rpm: int, *, window_s: float, retry_after: float) -> RateLimited:
    # Whole seconds, rounded up: `Retry-After` is an integer and a client that obeys it must
    # not come back a fraction of a second too early and be refused again.
    RATE_LIMIT_REFUSALS.labels("rpm").inc()
    seconds = max(1, math.ceil(retry_after))
    per = "minute" if window_s == DEFAULT_WINDOW_S else f"{window_s:g} seconds"
    return RateLimited(
        f"rate limit of {rpm} requests per {per} exceeded for this key; retry in {seconds} s",
        retry_after=seconds,
    )


def concurrency_exceeded(max_concurrency: int) -> RateLimited:
    RATE_LIMIT_REFUSALS.labels("concurrency").inc()
    return RateLimited(
        f"this key already has {max_concurrency} requests in flight; "
        "retry when one of them finishes",
        retry_after=CONCURRENCY_RETRY_AFTER_S,
    )


def refuse_zero_limits(*, rpm: int | None, max_concurrency: int | None, window_s: float) -> None:
    """A limit of 0 (or less) admits nothing; decided here so no store needs a special case."""
    if rpm is not None and rpm <= 0:
        raise rpm_exceeded(0, window_s=window_s, retry_after=window_s)
    if max_concurrency is not None and max_concurrency <= 0:
        raise concurrency_exceeded(0)
