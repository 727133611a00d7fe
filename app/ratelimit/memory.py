"""In-process rate limits: the default when `REDIS_URL` is unset (one gateway process).

rpm is a **sliding log**: per key, a deque of the monotonic times of the requests admitted in
the last `window_s` seconds. Admission drops the entries that left the window from the left
and admits while fewer than `rpm` remain. Why a log rather than GCRA or a sliding-window
counter, which need O(1) memory:

* it is exact: "at most N in *any* 60 s" is what an operator means by rpm, while GCRA admits
  a burst of N and then one every 60/N s (up to ~2N in the first minute), and the two-bucket
  counter is an approximation;
* it matches the Redis implementation (a sorted set of the same timestamps) exactly, so the
  limits mean the same with or without Redis;
* `Retry-After` is exact: when the oldest entry that must leave the window leaves it;
* its cost is fine: each timestamp is appended and popped once (amortised O(1) per call), and
  a deque never holds more than `rpm` entries, because refused requests are not logged.

Concurrency is a counter per key, decremented by `Lease.release()`.

No lock is needed: `acquire` never awaits between checking and updating, so on one event
loop it is atomic. Memory stays bounded: a key with no in-flight request and an empty window
is dropped on release, and a sweep every `window_s` (run inline by `acquire`, no background
task) drops every key idle for a whole window.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from app.ratelimit.base import (
    DEFAULT_WINDOW_S,
    UNLIMITED,
    Lease,
    concurrency_exceeded,
    refuse_zero_limits,
    rpm_exceeded,
)


@dataclass(slots=True)
class _KeyState:
    admitted: deque[float] = field(default_factory=deque)  # times, oldest first
    in_flight: int = 0


class MemoryRateLimiter:
    def __init__(
        self,
        *,
        window_s: float = DEFAULT_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window_s = window_s
        self._clock = clock
        self._keys: dict[str, _KeyState] = {}
        self._next_sweep = clock() + window_s

    def __len__(self) -> int:
        """How many keys are tracked (for tests and metrics)."""
        return len(self._keys)

    async def acquire(self, key_id: str, *, rpm: int | None, max_concurrency: int | None) -> Lease:
        if rpm is None and max_concurrency is None:
            return UNLIMITED
        refuse_zero_limits(rpm=rpm, max_concurrency=max_concurrency, window_s=self._window_s)
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        state = self._keys.get(key_id)
        if state is None:
            state = self._keys[key_id] = _KeyState()

        # Check both limits before taking anything, so a refusal takes nothing.
        if rpm is not None:
            admitted = self._prune(state, now)
            if len(admitted) >= rpm:
                # The entry whose leaving brings the count below rpm (the oldest one unless
                # the key's rpm was lowered while its window was full).
                leaves_at = admitted[len(admitted) - rpm] + self._window_s
                raise rpm_exceeded(rpm, window_s=self._window_s, retry_after=leaves_at - now)
        if max_concurrency is not None and state.in_flight >= max_concurrency:
            raise concurrency_exceeded(max_concurrency)

        if rpm is not None:
            state.admitted.append(now)
        if max_concurrency is None:
            return UNLIMITED
        state.in_flight += 1

        async def release() -> None:
            self._release(key_id, state)

        return Lease(release)

    def record(self, key_id: str, *, rpm: bool, concurrent: bool) -> Lease:
        """Count an admission decided elsewhere (by Redis), without checking any limit, so
        this process knows its own recent requests if it must decide alone later. Memory stays
        bounded as with `acquire`: the window is pruned and idle keys are swept."""
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        state = self._keys.get(key_id)
        if state is None:
            state = self._keys[key_id] = _KeyState()
        if rpm:
            self._prune(state, now).append(now)
        if not concurrent:
            return UNLIMITED
        state.in_flight += 1

        async def release() -> None:
            self._release(key_id, state)

        return Lease(release)

    async def aclose(self) -> None:
        self._keys.clear()

    def _prune(self, state: _KeyState, now: float) -> deque[float]:
        admitted = state.admitted
        horizon = now - self._window_s
        while admitted and admitted[0] <= horizon:
            admitted.popleft()
        return admitted

    def _release(self, key_id: str, state: _KeyState) -> None:
        state.in_flight -= 1
        if state.in_flight == 0 and not state.admitted and self._keys.get(key_id) is state:
            del self._keys[key_id]

    def _sweep(self, now: float) -> None:
        idle = [
            key_id
            for key_id, state in self._keys.items()
            if state.in_flight == 0 and not self._prune(state, now)
        ]
        for key_id in idle:
            del self._keys[key_id]
        self._next_sweep = now + self._window_s
