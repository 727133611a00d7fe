"""The circuit breaker shared by every replica through Redis (`REDIS_URL`).

Same state machine as `app.images.breaker.CircuitBreaker`, kept in one hash per provider,
`igw:breaker:{provider}`: `failures` (consecutive), `opened_until` and `opened_at` (ms; absent
while closed) and `probe_until` (ms; the lease of the one half-open probe). Each operation is
one Lua script, so it is atomic across replicas:

- acquire: closed → yes; open → no; half-open → yes for exactly one caller, who takes the
  probe lease (a prober that dies loses it after `probe_lease_s`, and another may probe);
- failure: count it; the threshold reached while closed, or a failed probe, (re)opens the
  breaker; only the script run that opens a closed breaker reports `cooled_down`;
- success: deletes the hash (closed); only the run that finds it open reports `recovered`.

So two replicas agree: both skip a cooled-down provider, one of them probes it, and each
transition is reported by exactly one replica, carrying `opened_at` as its identity.

Time is the caller's injected clock (wall-clock seconds by default), passed in as ms: replicas
whose clocks differ by a few ms disagree on the cool-down's end by as much. The hash expires
a day after its last failure, so idle providers leave nothing behind.

When Redis fails the breaker fails open: the call goes ahead (the provider decides), the
failure is logged; routing must not stop because its health cache is away.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from app.images.breaker import State, Transition, notify

logger = logging.getLogger(__name__)

DEFAULT_KEY_PREFIX = "igw:breaker"
_IDLE_TTL_MS = 86_400_000

# ARGV: now ms, probe lease ms. Returns 0 no, 1 yes (closed), 2 yes (the probe).
_ACQUIRE = """
local h = redis.call('HMGET', KEYS[1], 'opened_until', 'probe_until')
local opened = tonumber(h[1] or '0')
local now = tonumber(ARGV[1])
if opened == 0 then return 1 end
if now < opened then return 0 end
if tonumber(h[2] or '0') > now then return 0 end
redis.call('HSET', KEYS[1], 'probe_until', now + tonumber(ARGV[2]))
return 2
"""

# ARGV: now ms, threshold, cooldown ms, idle ttl ms. Returns {0} nothing new, {1, opened_at}
# cooled down now, {2} reopened after a failed probe.
_FAILURE = """
local h = redis.call('HMGET', KEYS[1], 'failures', 'opened_until', 'probe_until', 'opened_at')
local failures = tonumber(h[1] or '0') + 1
local opened = tonumber(h[2] or '0')
local probing = h[3] ~= false
local now = tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'failures', failures)
redis.call('HDEL', KEYS[1], 'probe_until')
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]))
if probing or (opened == 0 and failures >= tonumber(ARGV[2])) then
  redis.call('HSET', KEYS[1], 'opened_until', now + tonumber(ARGV[3]))
  if opened == 0 then
    redis.call('HSET', KEYS[1], 'opened_at', now)
    return {1, now}
  end
  return {2}
end
return {0}
"""

# Returns opened_at if the breaker was open (now recovered), else false.
_SUCCESS = """
local h = redis.call('HMGET', KEYS[1], 'opened_until', 'opened_at')
if redis.call('DEL', KEYS[1]) == 0 then return false end
if h[1] then return h[2] or '0' end
return false
"""

_RELEASE = "redis.call('HDEL', KEYS[1], 'probe_until') return 1"


def _wall_clock() -> float:
    return time.time()


class RedisCircuitBreaker:
    def __init__(
        self,
        redis: Redis,
        *,
        failure_threshold: int = 5,
        cooldown_s: float = 30.0,
        probe_lease_s: float = 120.0,
        clock: Callable[[], float] = _wall_clock,
        on_transition: Transition | None = None,
        key_prefix: str = DEFAULT_KEY_PREFIX,
    ) -> None:
        self._redis = redis
        self._threshold = failure_threshold
        self._cooldown_ms = int(cooldown_s * 1000)
        self._probe_lease_ms = int(probe_lease_s * 1000)
        self._clock = clock
        self._on_transition = on_transition
        self._prefix = key_prefix
        self._acquire = redis.register_script(_ACQUIRE)
        self._failure = redis.register_script(_FAILURE)
        self._success = redis.register_script(_SUCCESS)
        self._release = redis.register_script(_RELEASE)

    @classmethod
    def from_url(cls, url: str, *, timeout_s: float = 0.5, **options: Any) -> RedisCircuitBreaker:
        """Its own client, like the rate limiter's: short timeouts and one immediate retry (a
        pooled connection may be stale after a Redis restart), never a backoff loop, since
        every routed call waits on it."""
        client = Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1),
        )
        return cls(client, **options)

    def _key(self, provider: str) -> str:
        return f"{self._prefix}:{{{provider}}}"

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def state(self, provider: str) -> State:
        try:
            opened = await self._redis.hget(self._key(provider), "opened_until")
        except RedisError:
            return "closed"  # as `try_acquire` treats it
        if opened is None:
            return "closed"
        return "open" if self._now_ms() < int(opened) else "half_open"

    async def try_acquire(self, provider: str) -> bool:
        try:
            verdict = await self._acquire(
                keys=[self._key(provider)], args=[self._now_ms(), self._probe_lease_ms]
            )
        except RedisError:
            logger.warning("breaker: Redis unavailable; letting the call to %s through", provider)
            return True
        return int(verdict) != 0

    async def record_failure(self, provider: str) -> None:
        try:
            outcome = await self._failure(
                keys=[self._key(provider)],
                args=[self._now_ms(), self._threshold, self._cooldown_ms, _IDLE_TTL_MS],
            )
        except RedisError:
            logger.warning("breaker: Redis unavailable; failure of %s not counted", provider)
            return
        if int(outcome[0]) == 0:
            return
        logger.warning(
            "provider %s cooled down for %g s (shared)", provider, self._cooldown_ms / 1000
        )
        if int(outcome[0]) == 1:
            await notify(self._on_transition, provider, "cooled_down", str(int(outcome[1])))

    async def record_success(self, provider: str) -> None:
        try:
            opened_at = await self._success(keys=[self._key(provider)], args=[])
        except RedisError:
            logger.warning("breaker: Redis unavailable; success of %s not recorded", provider)
            return
        if opened_at is not None:
            since = opened_at.decode() if isinstance(opened_at, bytes) else str(opened_at)
            await notify(self._on_transition, provider, "recovered", since)

    async def release_probe(self, provider: str) -> None:
        try:
            await self._release(keys=[self._key(provider)], args=[])
        except RedisError:
            logger.warning("breaker: Redis unavailable; probe of %s not released", provider)

    async def aclose(self) -> None:
        await self._redis.aclose()
