"""Rate limits shared by every gateway replica, kept in Redis.

Same semantics as `memory.MemoryRateLimiter` (read its docstring for why a sliding log), with
the state in two sorted sets per key:

* `igw:rl:{key_id}:rpm`: one member per admitted request, scored by its admission time (ms);
* `igw:rl:{key_id}:conc`: one member per in-flight lease, scored by the time it *expires*.

One Lua script (`redis_scripts.ACQUIRE`) does a whole admission in one round trip, atomically:
it reads the clock with `TIME` (the server's clock, so replicas with skewed clocks agree),
drops rpm entries older than the window and leases past their expiry, checks both limits, and
only if both pass adds the request to both sets. A refusal therefore writes nothing and needs
no rollback. The script is sent by SHA (`EVALSHA`); redis-py's `Script` loads it on `NOSCRIPT`
(a restarted or failed-over server) and retries. The `{key_id}` braces are a Redis Cluster hash
tag: both keys of a script call land on the same slot.

**Slots have an owner and a heartbeat.** Each admission is a member named
`<process token>:<random>`, so the script is idempotent: run twice for one member (redis-py
resends a command whose reply was lost) it admits once and answers "admitted" again, instead
of counting the request twice and refusing it with its own slot. A lease is scored
`now + lease_ttl_s` (60 s by default) and a heartbeat task pushes the expiry of every lease
this process holds forward every `lease_ttl_s / 3`; a process that dies stops renewing, and its
slots free themselves within `lease_ttl_s`, not after the longest request could run.
`Lease.release()` is one `ZREM`, shielded from cancellation so a client disconnect still frees
the slot.

**An unknown outcome is compensated.** When the acquire script fails without an answer
(timeout, reset: it may or may not have run), or a release does, the member is put on a
"forget" list; it is removed (`ZREM` from both sets) at once if Redis answers, else before
anything else when Redis is back. So a lost reply can never leave a slot taken by a request
that is not running.

**When Redis fails** (down, timeout, error reply) the limiter *degrades to per-process limits*
instead of failing closed: it logs a warning (at most one a minute), serves requests from an
in-process `MemoryRateLimiter`, and tries Redis again after `retry_after_failure_s`. An outage of
the limiter must not take image generation down with it, and what a limit protects most, money,
is enforced by the database ledger; each replica applies the key's limits locally, so a key gets
at most (replicas x limit) during an outage rather than no limit. The local limiter also counts
every request Redis admitted (`MemoryRateLimiter.record`), so at the switch to local limits this
process still knows its own last minute and its in-flight leases.

**When Redis returns, the local decisions are merged back** before Redis decides anything again
(`_reconcile`): the forget list is applied, each request admitted locally within the window is
added to the key's rpm set at its real age (`redis_scripts.MERGE`), and each lease still in
flight is added to its concurrency set (and from then on renewed and released in Redis). A key
therefore cannot get more than its rpm in any window across the switch back: Redis sees what
was served while it was away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections import defaultdict
from dataclasses import dataclass
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
from app.ratelimit.redis_scripts import ACQUIRE, MERGE, RENEW

logger = logging.getLogger(__name__)

DEFAULT_LEASE_TTL_S = 60.0
DEFAULT_KEY_PREFIX = "igw:rl"

_ADMITTED, _OVER_RPM, _OVER_CONCURRENCY = 0, 1, 2
_WARN_EVERY_S = 60.0


@dataclass(slots=True, eq=False)
class _Slot:
    """One in-flight lease of this process: where it is held, and its local mirror."""

    key_id: str
    member: str
    local: Lease
    #: held in the Redis concurrency set (renewed and released there); False while only local
    in_redis: bool


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
        # no I/O: each is loaded on its first NOSCRIPT
        self._acquire_script = client.register_script(ACQUIRE)
        self._renew_script = client.register_script(RENEW)
        self._merge_script = client.register_script(MERGE)
        self._window_s = window_s
        self._window_ms = math.ceil(window_s * 1000)
        self._lease_ttl_ms = math.ceil(lease_ttl_s * 1000)
        self._renew_every_s = lease_ttl_s / 3
        self._prefix = key_prefix
        self._retry_after_failure_s = retry_after_failure_s
        self._release_timeout_s = release_timeout_s
        #: this process's view: every admission, by Redis or not; decides while Redis is down
        self._local = MemoryRateLimiter(window_s=window_s)
        #: names this process's members, so a slot in Redis says whose it is
        self._owner = secrets.token_hex(4)
        self._slots: dict[str, _Slot] = {}
        #: admitted while Redis was down, not yet in Redis: key -> [(member, monotonic time)]
        self._unmerged: dict[str, list[tuple[str, float]]] = defaultdict(list)
        #: members that may be in Redis but must not be: (their keys, member)
        self._to_forget: list[tuple[tuple[str, ...], str]] = []
        self._reconciling = asyncio.Lock()
        self._redis_down_until = 0.0
        self._next_warning = 0.0
        self._degraded = False
        self._heartbeat: asyncio.Task[None] | None = None
        self._failed = asyncio.Event()

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

    @property
    def degraded(self) -> bool:
        """Deciding alone: Redis failed and its state has not been reconciled yet."""
        return self._degraded

    async def acquire(self, key_id: str, *, rpm: int | None, max_concurrency: int | None) -> Lease:
        if rpm is None and max_concurrency is None:
            return UNLIMITED
        refuse_zero_limits(rpm=rpm, max_concurrency=max_concurrency, window_s=self._window_s)
        if self._degraded and (
            time.monotonic() < self._redis_down_until or not await self._reconcile()
        ):
            return await self._acquire_locally(key_id, rpm=rpm, max_concurrency=max_concurrency)

        keys = self.keys_for(key_id)
        member = self._new_member()
        args = (member, rpm or 0, max_concurrency or 0, self._window_ms, self._lease_ttl_ms)
        try:
            status, value = await self._acquire_script(keys=keys, args=args)
        except RedisError as exc:
            # No answer (redis-py has already resent it once): the script may have admitted
            # us. Take it back when Redis answers again (not now: the request would wait on a
            # server that just failed), and decide locally meanwhile.
            self._redis_failed(exc)
            self._to_forget.append((keys, member))
            return await self._acquire_locally(key_id, rpm=rpm, max_concurrency=max_concurrency)
        except BaseException:
            # Cancelled (or worse) while the script may already have admitted us: give back
            # what it may have taken, as a request that never ran should not count.
            await self._forget(keys, member)
            raise

        if status == _OVER_RPM:
            assert rpm is not None
            raise rpm_exceeded(rpm, window_s=self._window_s, retry_after=int(value) / 1000)
        if status == _OVER_CONCURRENCY:
            assert max_concurrency is not None
            raise concurrency_exceeded(max_concurrency)
        local = self._local.record(
            key_id, rpm=rpm is not None, concurrent=max_concurrency is not None
        )
        if max_concurrency is None:
            return UNLIMITED
        return self._lease(_Slot(key_id, member, local, in_redis=True))

    async def aclose(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        await self._local.aclose()
        if self._owns_client:
            await self._client.aclose()

    # leases -------------------------------------------------------------------------------
    def _new_member(self) -> str:
        return f"{self._owner}:{secrets.token_hex(8)}"

    def _lease(self, slot: _Slot) -> Lease:
        self._slots[slot.member] = slot
        if slot.in_redis:
            self._start_heartbeat()

        async def release() -> None:
            del self._slots[slot.member]
            await slot.local.release()
            if slot.in_redis:
                await self._forget(self.keys_for(slot.key_id)[1:], slot.member)

        return Lease(release)

    async def _acquire_locally(
        self, key_id: str, *, rpm: int | None, max_concurrency: int | None
    ) -> Lease:
        local = await self._local.acquire(key_id, rpm=rpm, max_concurrency=max_concurrency)
        member = self._new_member()
        if rpm is not None:
            self._unmerged[key_id].append((member, time.monotonic()))
        if max_concurrency is None:
            return UNLIMITED
        return self._lease(_Slot(key_id, member, local, in_redis=False))

    def _start_heartbeat(self) -> None:
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.get_running_loop().create_task(
                self._maintain(), name="rate-limit-heartbeat"
            )

    async def _maintain(self) -> None:
        """Renew this process's leases; while Redis is away, reconcile as soon as it is back
        (not only on the next request: a slot to forget must not wait for one)."""
        while True:
            if self._degraded:
                await anyio.sleep(max(0.05, self._redis_down_until - time.monotonic()))
                if self._degraded and time.monotonic() >= self._redis_down_until:
                    await self._reconcile()
            else:
                with anyio.move_on_after(self._renew_every_s):
                    await self._failed.wait()  # Redis failing wakes this loop at once
                self._failed.clear()
                if not self._degraded:
                    await self.renew()

    async def renew(self) -> None:
        """Push the expiry of every lease this process holds in Redis forward (one pipeline)."""
        members: dict[str, list[str]] = defaultdict(list)
        for slot in self._slots.values():
            if slot.in_redis:
                members[slot.key_id].append(slot.member)
        if not members:
            return
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key_id, held in members.items():
                    await self._renew_script(
                        keys=self.keys_for(key_id)[1:],
                        args=(self._lease_ttl_ms, *held),
                        client=pipe,
                    )
                await pipe.execute()
        except RedisError as exc:
            self._redis_failed(exc)

    async def _forget(self, keys: tuple[str, ...], member: str) -> None:
        """Remove `member` from `keys` now, or remember to as soon as Redis answers."""
        with anyio.move_on_after(self._release_timeout_s, shield=True) as scope:
            try:
                await self._remove(keys, member)
                return
            except RedisError as exc:
                self._redis_failed(exc)
        if scope.cancelled_caught:
            self._redis_failed(TimeoutError("no answer to a release"))
        self._to_forget.append((keys, member))

    async def _remove(self, keys: tuple[str, ...], member: str) -> None:
        if len(keys) == 1:
            await self._client.zrem(keys[0], member)
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.zrem(key, member)
            await pipe.execute()

    # outage and return --------------------------------------------------------------------
    async def _reconcile(self) -> bool:
        """Bring Redis up to date with what was decided without it; True once it is."""
        async with self._reconciling:
            if not self._degraded:
                return True  # another request did it while this one waited
            try:
                while self._to_forget:
                    keys, member = self._to_forget[0]
                    await self._remove(keys, member)
                    self._to_forget.pop(0)
                # merge until nothing new was decided locally meanwhile (no await after it)
                while self._unmerged or any(not s.in_redis for s in self._slots.values()):
                    await self._merge_once()
            except RedisError as exc:
                self._redis_failed(exc)
                return False
            self._degraded = False
        logger.info("Redis rate limiter answers again: limits are shared again")
        return True

    async def _merge_once(self) -> None:
        now = time.monotonic()
        entries, self._unmerged = self._unmerged, defaultdict(list)
        leases: dict[str, list[_Slot]] = defaultdict(list)
        for slot in self._slots.values():
            if not slot.in_redis:
                leases[slot.key_id].append(slot)
        try:
            for key_id in entries.keys() | leases.keys():
                ages = [
                    (member, math.floor((now - admitted) * 1000))
                    for member, admitted in entries.get(key_id, [])
                ]
                args: list[str | int] = [self._window_ms, self._lease_ttl_ms, len(ages)]
                for member, age_ms in ages:
                    args += [member, age_ms]
                args += [slot.member for slot in leases.get(key_id, [])]
                await self._merge_script(keys=self.keys_for(key_id), args=args)
                entries.pop(key_id, None)
                for slot in leases.pop(key_id, []):
                    slot.in_redis = True
                    if slot.member not in self._slots:  # released while being merged
                        await self._remove(self.keys_for(key_id)[1:], slot.member)
        except BaseException:
            for key_id, pending in entries.items():  # not merged yet: keep them for next time
                self._unmerged[key_id][:0] = pending
            raise
        if any(slot.in_redis for slot in self._slots.values()):
            self._start_heartbeat()

    def _redis_failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        self._degraded = True
        self._redis_down_until = now + self._retry_after_failure_s
        self._failed.set()
        self._start_heartbeat()
        if now >= self._next_warning:
            self._next_warning = now + _WARN_EVERY_S
            logger.warning(
                "Redis rate limiter unavailable (%r): enforcing rate limits per process "
                "until it answers again",
                exc,
            )
