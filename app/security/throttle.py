"""Failure budgets per client address: guessing credentials costs the guesser, not the gateway.

    failed attempt ──record_failure(addr)──▶ one token taken from addr's bucket
    next attempt   ──check(addr)───────────▶ bucket empty? 429 RATE_LIMITED, Retry-After
                                              (before the credential is even looked at)

A token bucket per address: `burst` failures are allowed at once, then one more every
`refill_s` seconds (the bucket refills while the address stays quiet). Successful attempts
cost nothing, so a client with a valid credential and an occasional typo never notices.

The table is bounded (`max_addresses`, least recently failed dropped first) so that a flood
from many addresses cannot grow memory without limit; an address pushed out simply starts
again with a full bucket. It is per process: with N replicas an attacker gets N budgets,
which still bounds the work to a constant factor of what one process allows.

The clock is injected (`time.monotonic` by default) so tests step time instead of sleeping.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import HTTPConnection

from app.errors import RateLimited


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class FailureThrottle:
    """Counts failed credential attempts per client address and refuses over-budget ones."""

    def __init__(
        self,
        *,
        what: str,
        burst: int,
        refill_s: float,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst < 1 or refill_s <= 0:
            raise ValueError("a failure throttle needs burst >= 1 and refill_s > 0")
        self._what = what
        self._burst = burst
        self._refill_s = refill_s
        self._max_addresses = max_addresses
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def check(self, address: str) -> None:
        """Raise 429 when `address` has used up its failure budget; otherwise do nothing."""
        bucket = self._refilled(address)
        if bucket is not None and bucket.tokens < 1:
            wait = (1 - bucket.tokens) * self._refill_s
            raise RateLimited(
                f"Too many failed {self._what} attempts from this address; "
                f"retry in {math.ceil(wait)} s.",
                retry_after=wait,
            )

    def record_failure(self, address: str) -> None:
        bucket = self._refilled(address)
        if bucket is None:
            bucket = _Bucket(tokens=float(self._burst), updated=self._clock())
            self._buckets[address] = bucket
        bucket.tokens = max(0.0, bucket.tokens - 1)
        self._buckets.move_to_end(address)
        while len(self._buckets) > self._max_addresses:
            self._buckets.popitem(last=False)

    def _refilled(self, address: str) -> _Bucket | None:
        bucket = self._buckets.get(address)
        if bucket is None:
            return None
        now = self._clock()
        bucket.tokens = min(
            float(self._burst), bucket.tokens + (now - bucket.updated) / self._refill_s
        )
        bucket.updated = now
        if bucket.tokens >= self._burst:  # fully recovered: forget the address
            del self._buckets[address]
            return None
        return bucket


def client_address(request: HTTPConnection) -> str:
    """The peer address uvicorn reports (the proxy-resolved one behind a trusted proxy)."""
    return request.client.host if request.client else "unknown"
