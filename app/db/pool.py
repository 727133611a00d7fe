"""The database pool: SQLAlchemy's, with its queue counted, urgent checkouts, and its budget.

    checkout ─▶ an idle connection? ─▶ yes: go
                                    └▶ no: queue (a wait: `app.pools.Waits`) ─▶ served in order,
                                           urgent checkouts first (`urgent_checkouts`)

- `CountedPool` / `CountedQueue`: the queue inside SQLAlchemy's pool counts every caller that
  must wait, whoever asked (ledger, keys, admin), and the seconds they wait; `pool_gauge`
  publishes it as the `database` pool (`app.pools`, `app.observability.runtime`).
- `urgent_checkouts()`: statements that gate many requests (a batch of holds) go first.
- `ConnectionBudget`: the pool must fit Postgres's `max_connections` (100 by default, 3 of
  them reserved for superusers) across every process of every replica:

      pool_size x workers x replicas + 13 (superusers, CLI, migrations, monitoring)
          <= max_connections

  A connection is held for one statement (about 1-3 ms), never across a provider call, so the
  default of 20 per process carries thousands of requests in flight; Postgres's default 100
  then fits 4 processes (2 replicas x 2 workers: 80 + 13 <= 100); 10 fits 8. A process past
  the limit gets "too many clients" (503) under load, not at start, so `serve` logs the
  arithmetic, as a warning when one replica alone does not fit.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry
from sqlalchemy.util.concurrency import await_
from sqlalchemy.util.queue import AsyncAdaptedQueue, Empty

from app.pools import PoolGauge, Waits

#: set by `urgent_checkouts()`: this task's checkouts go ahead of every other waiter
_URGENT: ContextVar[bool] = ContextVar("db_checkout_urgent", default=False)


@contextlib.contextmanager
def urgent_checkouts() -> Iterator[None]:
    """Checkouts inside go to the head of the pool's queue (first come among the urgent).

    For the few statements that gate many requests at once, e.g. a batch of holds (the start
    of up to a hundred provider calls), which must not wait behind a thousand single settles
    in a busy pool. Bounded by design: the caller keeps at most one such statement in flight
    per account, so ordinary checkouts are delayed by one statement at most, never starved.
    """
    token = _URGENT.set(True)
    try:
        yield
    finally:
        _URGENT.reset(token)


class CountedQueue(AsyncAdaptedQueue[ConnectionPoolEntry]):
    """The pool's queue of idle connections; a blocking `get` that finds none is a wait.

    A returned connection goes to the oldest urgent waiter if there is one (`urgent_checkouts`),
    else into the queue, whose waiters are served first come, first served."""

    waits: Waits

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        super().__init__(maxsize, use_lifo)
        self._urgent: collections.deque[asyncio.Future[ConnectionPoolEntry]] = collections.deque()

    def put_nowait(self, item: ConnectionPoolEntry) -> None:
        while self._urgent:
            waiter = self._urgent.popleft()
            if not waiter.done():
                waiter.set_result(item)
                return
        super().put_nowait(item)

    def get(self, block: bool = True, timeout: float | None = None) -> ConnectionPoolEntry:
        if not block:
            return super().get(block, timeout)
        try:
            return self.get_nowait()
        except Empty:
            pass
        self.waits.begin()
        try:
            if _URGENT.get():
                return await_(self._get_urgently(timeout))
            return super().get(block, timeout)
        finally:
            self.waits.end()

    async def _get_urgently(self, patience_s: float | None) -> ConnectionPoolEntry:
        waiter: asyncio.Future[ConnectionPoolEntry] = asyncio.get_running_loop().create_future()
        self._urgent.append(waiter)
        try:
            async with asyncio.timeout(patience_s):
                return await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self.put_nowait(waiter.result())  # served just as it gave up: pass it on
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._urgent.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise Empty() from exc
            raise


class CountedPool(AsyncAdaptedQueuePool):
    """SQLAlchemy's asyncio pool with its waits counted (`CountedQueue`).

    QueuePool blocks on its queue only once all `pool_size` connections exist and none is idle
    (before that a checkout opens a connection), so every wait counted is a caller queued for
    a busy pool. The counts survive `engine.dispose()` (which recreates the pool)."""

    _queue_class = CountedQueue
    #: SQLAlchemy's own logger for the pool, so its level floor (`app.observability.logs`) holds
    _sqla_logger_namespace = "sqlalchemy.pool.impl.AsyncAdaptedQueuePool"

    def __init__(self, creator: Any, pool_size: int = 5, **kwargs: Any) -> None:
        super().__init__(creator, pool_size=pool_size, **kwargs)
        self.queue.waits = Waits("database", pool_size)

    @property
    def queue(self) -> CountedQueue:
        queue = self._pool
        assert isinstance(queue, CountedQueue)
        return queue

    @property
    def waits(self) -> Waits:
        return self.queue.waits

    def recreate(self) -> CountedPool:
        fresh = super().recreate()
        assert isinstance(fresh, CountedPool)
        fresh.queue.waits = self.waits
        return fresh


def pool_gauge(engine: AsyncEngine) -> PoolGauge | None:
    """The database pool's size, use and waits for metrics (None: not a `CountedPool`)."""
    pool = engine.sync_engine.pool
    if not isinstance(pool, CountedPool):
        return None
    waits = pool.waits

    def in_use() -> int:
        current = engine.sync_engine.pool  # replaced by engine.dispose()
        return current.checkedout() if isinstance(current, CountedPool) else 0

    return PoolGauge(
        "database", pool.size(), in_use, lambda: waits.now, lambda: waits.total, waits.seconds
    )


#: connections of `max_connections` the gateway's pools must leave free: Postgres's
#: superuser_reserved_connections (3) and ~10 for the CLI, migrations and monitoring
RESERVED_CONNECTIONS = 13


@dataclass(frozen=True, slots=True)
class ConnectionBudget:
    """How many replicas of this process layout Postgres's `max_connections` can carry."""

    pool_size: int
    workers: int
    max_connections: int

    @property
    def per_replica(self) -> int:
        return self.pool_size * self.workers

    @property
    def replicas(self) -> int:
        return max(0, self.max_connections - RESERVED_CONNECTIONS) // self.per_replica

    def describe(self) -> str:
        line = (
            f"database pool: {self.pool_size} connections x {self.workers} worker(s) = "
            f"{self.per_replica} per replica; Postgres max_connections {self.max_connections} "
            f"(less {RESERVED_CONNECTIONS} kept free) carries {self.replicas} such replica(s)"
        )
        if self.replicas == 0:
            fits = max(1, (self.max_connections - RESERVED_CONNECTIONS) // self.workers)
            line += (
                f": requests will fail with 'too many clients' under load; set "
                f"GATEWAY_DB_POOL_SIZE to at most {fits} or raise max_connections"
            )
        return line


async def max_connections(engine: AsyncEngine) -> int | None:
    """Postgres's `max_connections` (None on SQLite, or when it cannot be read)."""
    if engine.dialect.name != "postgresql":
        return None
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(text("SHOW max_connections"))).scalar_one())
    except Exception:  # preflight already reported an unusable database; this is advice only
        return None
