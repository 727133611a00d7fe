"""A background sampler: event-loop lag and pool occupancy, twice a second.

    every INTERVAL_S:  lag = how late the loop woke us up  ─▶ event_loop_lag_seconds
                       each pool's size, in use, waiting   ─▶ pool_* gauges
                       new waits since the last sample     ─▶ pool_waits_total
                       seconds queued since the last sample ─▶ pool_wait_seconds_total

Sampling instead of updating gauges on every pool entry keeps the hot path free of metric
writes (in multiprocess mode each is a locked write to a memory-mapped file), and it is what
makes the pool gauges work across workers at all: prometheus-client cannot call a function at
scrape time in multiprocess mode, so each worker publishes its own values here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Final

from app.observability import metrics
from app.pools import PoolGauge

logger = logging.getLogger(__name__)

INTERVAL_S: Final = 0.5


class RuntimeSampler:
    def __init__(
        self, pools: Callable[[], Sequence[PoolGauge]], *, interval_s: float = INTERVAL_S
    ) -> None:
        self._pools = pools
        self._interval_s = interval_s
        self._waits_seen: dict[str, int] = {}
        self._wait_seconds_seen: dict[str, float] = {}

    def sample_pools(self) -> None:
        for pool in self._pools():
            metrics.POOL_SIZE.labels(pool.name).set(pool.size)
            metrics.POOL_IN_USE.labels(pool.name).set(pool.in_use())
            metrics.POOL_WAITING.labels(pool.name).set(pool.waiting())
            waits = pool.waits()
            new = waits - self._waits_seen.get(pool.name, 0)
            if new > 0:
                metrics.POOL_WAITS.labels(pool.name).inc(new)
            self._waits_seen[pool.name] = waits
            seconds = pool.wait_seconds()
            queued = seconds - self._wait_seconds_seen.get(pool.name, 0.0)
            if queued > 0:
                metrics.POOL_WAIT_SECONDS.labels(pool.name).inc(queued)
            self._wait_seconds_seen[pool.name] = seconds

    async def run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self._interval_s)
            metrics.EVENT_LOOP_LAG.observe(max(0.0, loop.time() - before - self._interval_s))
            try:
                self.sample_pools()
            except Exception:  # a sampler must never die of a metrics hiccup
                logger.warning("pool sampling failed", exc_info=True)


@contextlib.asynccontextmanager
async def sampling(pools: Callable[[], Sequence[PoolGauge]]) -> AsyncIterator[RuntimeSampler]:
    sampler = RuntimeSampler(pools)
    sampler.sample_pools()
    task = asyncio.create_task(sampler.run_forever(), name="runtime-sampler")
    try:
        yield sampler
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
