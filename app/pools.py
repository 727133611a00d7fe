"""The two pools a request can queue on, and how full they are: the queueing signal.

    request ─▶ database pool (hold)  ─▶ upstream pool (the provider call) ─▶ database pool (settle)

Both are sized for image workloads by default (`Settings.upstream_max_connections`,
`Settings.db_pool_size`). When one is the bottleneck, requests wait for it instead of failing;
every pool publishes (`Gateway.pools`, sampled twice a second by `app.observability.runtime`)

    image_gateway_pool_size{pool="upstream"|"database"}
    image_gateway_pool_in_use{pool=...}
    image_gateway_pool_waiting{pool=...}            # callers queued right now
    image_gateway_pool_waits_total{pool=...}        # callers so far that found the pool full
    image_gateway_pool_wait_seconds_total{pool=...} # seconds they spent queued, all together

`rate(wait_seconds_total)` is the average number of callers queued (Little's law) and
`rate(wait_seconds_total) / rate(waits_total)` the average wait: a pool that is the bottleneck
shows as a climbing `wait_seconds_total`, even when each wait is shorter than a sample. The
seconds are exact, not sampled: `Waits` integrates the queue length over time on each change.
A queue with a lagging event loop (`image_gateway_event_loop_lag_seconds`) is the CPU's, not
the pool's: connections sit checked out while their tasks wait for the loop (Postgres shows
them `idle`), and a larger pool would not help.

Where the counts come from:
- upstream: `Occupancy`, entered and left around every provider call (`app.upstream_client`);
  a caller beyond `size` is queued inside aiohttp's connector.
- database: `CountedQueue`, the queue of connections inside SQLAlchemy's pool (`app.db.pool`):
  a checkout that finds it empty and must block is a wait, whoever asked (ledger, keys, admin).

The hot path pays nothing while a pool has room: the clock is read only when a wait begins or
ends. A pool that makes requests wait also logs one warning a minute, so the signal exists
without a metrics stack.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

_WARN_EVERY_S = 60.0

Clock = Callable[[], float]


@dataclass(slots=True)
class PoolGauge:
    """One pool's size and occupancy, read on demand."""

    name: str
    size: int
    in_use: Callable[[], int]
    waiting: Callable[[], int]
    #: callers so far that found the pool full (a running total)
    waits: Callable[[], int]
    #: seconds callers have spent queued for the pool, all together (a running total)
    wait_seconds: Callable[[], float]


@dataclass(slots=True)
class Waits:
    """Callers queued for one pool: how many now, how many so far, and for how long in all.

    `seconds()` is the integral of the queue length over time, advanced at every `begin` and
    `end`, so it is exact whatever the order in which waiters are served (for a single waiter
    it is that waiter's wait)."""

    name: str
    size: int
    clock: Clock = time.monotonic
    now: int = 0
    total: int = 0
    _seconds: float = 0.0
    _since: float = 0.0
    _warned_at: float | None = field(default=None)

    def begin(self) -> None:
        at = self._advance()
        self.now += 1
        self.total += 1
        if self._warned_at is None or at - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = at
            logger.warning(
                "%s pool exhausted: %d requests waiting for one of %d connections "
                "(if this persists while the event-loop lag is low, raise its size)",
                self.name,
                self.now,
                self.size,
            )

    def end(self) -> None:
        self._advance()
        self.now -= 1

    def seconds(self) -> float:
        """Seconds spent queued so far, the current waiters' time included."""
        if self.now == 0:
            return self._seconds
        return self._seconds + self.now * (self.clock() - self._since)

    def _advance(self) -> float:
        at = self.clock()
        self._seconds += self.now * (at - self._since)
        self._since = at
        return at


@dataclass(slots=True)
class Occupancy:
    """Counts callers holding (or waiting for) one of `size` slots; those beyond `size` wait."""

    name: str
    size: int
    clock: Clock = time.monotonic
    active: int = 0
    queue: Waits = field(init=False)

    def __post_init__(self) -> None:
        self.queue = Waits(self.name, self.size, self.clock)

    def enter(self) -> None:
        self.active += 1
        if self.active > self.size:
            self.queue.begin()

    def leave(self) -> None:
        if self.active > self.size:
            self.queue.end()
        self.active -= 1

    def in_use(self) -> int:
        return min(self.active, self.size)

    def waiting(self) -> int:
        return max(0, self.active - self.size)

    def waits(self) -> int:
        return self.queue.total

    def gauge(self) -> PoolGauge:
        return PoolGauge(
            self.name, self.size, self.in_use, self.waiting, self.waits, self.queue.seconds
        )
