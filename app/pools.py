"""The two pools a request can queue on, and how full they are: the queueing signal.

    request ─▶ database pool (hold)  ─▶ upstream pool (the provider call) ─▶ database pool (settle)

Both are sized for image workloads by default (`Settings.upstream_max_connections`,
`Settings.db_pool_size`). When one is the bottleneck, requests wait for it instead of failing;
`PoolGauge.waiting` says how many are waiting right now, so a metrics exporter can publish

    image_gateway_pool_size{pool="upstream"|"database"}
    image_gateway_pool_in_use{pool=...}
    image_gateway_pool_waiting{pool=...}      # > 0 for long: raise the pool size
    image_gateway_pool_waits_total{pool=...}  # callers that found the pool full

(`Gateway.pools`, sampled twice a second by `app.observability.runtime`: no per-request cost
beyond an integer increment when a caller has to wait). A pool that makes requests wait
also logs one warning a minute, so the signal exists without a metrics stack.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

_WARN_EVERY_S = 60.0


@dataclass(slots=True)
class PoolGauge:
    """One pool's size and occupancy, read on demand."""

    name: str
    size: int
    in_use: Callable[[], int]
    waiting: Callable[[], int]
    #: callers so far that found the pool full (a running total)
    waits: Callable[[], int]


@dataclass(slots=True)
class Occupancy:
    """Counts callers holding (or waiting for) one of `size` slots; warns when they queue."""

    name: str
    size: int
    active: int = 0
    #: callers so far that entered a full pool and had to wait
    waited: int = 0
    _warned_at: float = field(default=-_WARN_EVERY_S)

    def enter(self) -> None:
        self.active += 1
        if self.active > self.size:
            self.waited += 1
            now = time.monotonic()
            if now - self._warned_at >= _WARN_EVERY_S:
                self._warned_at = now
                logger.warning(
                    "%s pool exhausted: %d requests waiting for one of %d connections "
                    "(raise its size if this persists)",
                    self.name,
                    self.active - self.size,
                    self.size,
                )

    def leave(self) -> None:
        self.active -= 1

    def in_use(self) -> int:
        return min(self.active, self.size)

    def waiting(self) -> int:
        return max(0, self.active - self.size)

    def waits(self) -> int:
        return self.waited

    def gauge(self) -> PoolGauge:
        return PoolGauge(self.name, self.size, self.in_use, self.waiting, self.waits)
