"""Rate limits shared by every gateway replica, kept in Redis.

Same semantics as `memory.MemoryRateLimiter` (read its docstring for why a sliding log), with
the state in two sorted sets per key:

* `igw:rl:{key_id}:rpm`: one member per admitted request, scored by its admission time (ms);
* `igw:rl:{key_id}:conc`: one member per in-flight lease, scored by the time it *expires*.

One Lua script (`_ACQUIRE`) does a whole admission in one round trip, atomically: it reads the
clock with `TIME` (the server's clock, so replicas with skewed clocks agree), drops rpm entries
older than the window and leases past their expiry, checks both limits, and only if both pass
adds the request to both sets. A refusal therefore writes nothing and needs no rollback. The
script is sent by SHA (`EVALSHA`); redis-py's `Script` loads it on `NOSCRIPT` (a restarted or
failed-over server) and retries.

Leases expire: a process that dies holding one cannot release it, so each lease is scored
`now + lease_ttl_s` and stops counting after that (default 15 min, longer than any image
request's timeout). `Lease.release()` is one `ZREM`, shielded from cancellation so a client
disconnect still frees the slot. Every key gets a `PEXPIRE` covering its newest member, so a
key that goes idle vanishes by itself. The `{key_id}` braces are a Redis Cluster hash tag:
both keys of a script call land on the same slot.

**When Redis fails** (down, timeout, error reply) the limiter *degrades to per-process limits*
instead of failing closed: it logs a warning (at most one a minute), serves the request from
an in-process `MemoryRateLimiter`, and tries Redis again after `retry_after_failure_s`. An
outage of the limiter must not take image generation down with it, and what a limit protects
most, money, is enforced by the database ledger; each replica still applies the key's limits
locally, so a key gets at most (replicas x limit) during an outage rather than no limit.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from typing import Any

import anyio
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from app.ratelimit.base import (
    DEFAULT_WINDOW_S,
    UNLIMITED,
    Lease,
    concurrency_exceeded,
    refuse_zero_limits,
    rpm_exceeded,
)
from app.ratelimit.memory import MemoryRateLimiter

logger = logging.getLogger(__name__)

DEFAULT_LEASE_TTL_S = 15 * 60.0
DEFAULT_KEY_PREFIX = "igw:rl"

# KEYS: rpm set, concurrency set. ARGV: member id, rpm, max concurrency (0 = no such limit),
# window ms, lease ttl ms. Returns {0, 0} admitted, {1, retry ms} over rpm, {2, 0} over
# concurrency. Numbers passed to redis.call are formatted by Redis with full precision.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id = ARGV[1]
local rpm = tonumber(ARGV[2])
local conc = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  local used = redis.call('ZCARD', KEYS[1])
  if used >= rpm then
    local edge = redis.call('ZRANGE', KEYS[1], used - rpm, used - rpm, 'WITHSCORES')
    return {1, tonumber(edge[2]) + window - now}
  end
end
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= conc then
    return {2, 0}
  end
end
if rpm > 0 then
  redis.call('ZADD', KEYS[1], now, id)
  redis.call('PEXPIRE', KEYS[1], window)
end
if conc > 0 then
  redis.call('ZADD', KEYS[2], now + ttl, id)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return {0, 0}
"""

_ADMITTED, _OVER_RPM, _OVER_CONCURRENCY = 0, 1, 2
_WARN_EVERY_S = 60.0


class RedisRateLimiter:
    def __init__(
        self,
        client: Redis,
        *,
        window_s: float = DEFAULT_WINDOW_S,
        lease_ttl_s: float = DEFAULT_LEASE_TTL_S,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        retry_after_failure_s: float = 1.0,
        release_timeout_s: float = 1.0,
        owns_client: bool = False,
    ) -> None:
        self._client = client
        self._owns_client = owns_client
        self._script = client.register_script(_ACQUIRE)  # no I/O: loaded on first NOSCRIPT
        self._window_s = window_s
        self._window_ms = math.ceil(window_s * 1000)
        self._lease_ttl_ms = math.ceil(lease_ttl_s * 1000)
        self._prefix = key_prefix
        self._retry_after_failure_s = retry_after_failure_s
        self._release_timeout_s = release_timeout_s
        self._fallback = MemoryRateLimiter(window_s=window_s)
        self._redis_down_until = 0.0
        self._next_warning = 0.0
        self._degraded = False

    @classmethod
    def from_url(cls, url: str, *, timeout_s: float = 0.5, **options: Any) -> RedisRateLimiter:
        """A limiter with its own client: short timeouts and one immediate retry (a pooled
        connection may be stale after a Redis restart), never a slow backoff loop, because
        every API request waits on this call."""
        client = Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1),
        )
        return cls(client, owns_client=True, **options)

    def keys_for(self, key_id: str) -> tuple[str, str]:
        """The (rpm, concurrency) Redis keys of an API key."""
        base = f"{self._prefix}:{{{key_id}}}"
        return f"{base}:rpm", f"{base}:conc"

    async def acquire(self, key_id: str, *, rpm: int | None, max_concurrency: int | None) -> Lease:
        if rpm is None and max_concurrency is None:
            return UNLIMITED
        refuse_zero_limits(rpm=rpm, max_concurrency=max_concurrency, window_s=self._window_s)
        if time.monotonic() < self._redis_down_until:
            return await self._fallback.acquire(key_id, rpm=rpm, max_concurrency=max_concurrency)

        keys = self.keys_for(key_id)
        member = secrets.token_hex(8)
        args = (member, rpm or 0, max_concurrency or 0, self._window_ms, self._lease_ttl_ms)
        try:
            status, value = await self._script(keys=keys, args=args)
        except RedisError as exc:
            self._redis_failed(exc)
            return await self._fallback.acquire(key_id, rpm=rpm, max_concurrency=max_concurrency)
        except BaseException:
            # Cancelled (or worse) while the script may already have admitted us: give back
            # what it may have taken, as a request that never ran should not count.
            await self._forget(keys, member)
            raise
        if self._degraded:
            self._degraded = False
            logger.info("Redis rate limiter answers again: limits are shared again")

        if status == _OVER_RPM:
            assert rpm is not None
            raise rpm_exceeded(rpm, window_s=self._window_s, retry_after=int(value) / 1000)
        if status == _OVER_CONCURRENCY:
            assert max_concurrency is not None
            raise concurrency_exceeded(max_concurrency)
        if max_concurrency is None:
            return UNLIMITED

        async def release() -> None:
            await self._forget(keys[1:], member)

        return Lease(release)

    async def aclose(self) -> None:
        await self._fallback.aclose()
        if self._owns_client:
            await self._client.aclose()

    async def _forget(self, keys: tuple[str, ...], member: str) -> None:
        """Remove `member` from `keys`; best effort, because lease expiry is the backstop."""
        with anyio.move_on_after(self._release_timeout_s, shield=True):
            try:
                if len(keys) == 1:
                    await self._client.zrem(keys[0], member)
                else:
                    async with self._client.pipeline(transaction=False) as pipe:
                        for key in keys:
                            pipe.zrem(key, member)
                        await pipe.execute()
            except RedisError as exc:
                self._redis_failed(exc)

    def _redis_failed(self, exc: RedisError) -> None:
        now = time.monotonic()
        self._degraded = True
        self._redis_down_until = now + self._retry_after_failure_s
        if now >= self._next_warning:
            self._next_warning = now + _WARN_EVERY_S
            logger.warning(
                "Redis rate limiter unavailable (%r): enforcing rate limits per process "
                "until it answers again",
                exc,
            )
