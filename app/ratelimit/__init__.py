"""Per-key rate limits (requests per minute and concurrency), in-process or shared via Redis.

    limiter = make_rate_limiter(settings.redis_url)
    async with await limiter.acquire(key.id, rpm=key.rpm, max_concurrency=key.max_concurrency):
        ...  # the request; RateLimited (429) was raised instead if the key is over a limit
    await limiter.aclose()  # at shutdown

See `base` for the contract, `memory` and `redis` for the two implementations.
"""

from __future__ import annotations

from typing import Any

from app.ratelimit.base import UNLIMITED, Lease, RateLimiter
from app.ratelimit.memory import MemoryRateLimiter
from app.ratelimit.redis import RedisRateLimiter

__all__ = [
    "UNLIMITED",
    "Lease",
    "MemoryRateLimiter",
    "RateLimiter",
    "RedisRateLimiter",
    "make_rate_limiter",
]


def make_rate_limiter(redis_url: str | None, **options: Any) -> RateLimiter:
    """Shared limits through Redis when `redis_url` is set, else in-process ones.

    `options` go to the implementation (`window_s`, and for Redis `lease_ttl_s`,
    `key_prefix`, `timeout_s`, ...).
    """
    if redis_url:
        return RedisRateLimiter.from_url(redis_url, **options)
    return MemoryRateLimiter(**options)
