"""Database engines and sessions.

One `AsyncEngine` per process, created at start-up from `Settings.database_url` (already
normalized to an async driver: asyncpg for Postgres, aiosqlite for SQLite). SQLite gets WAL and
a busy timeout so several connections (and the CLI beside a running server) can share the file.

Every wait on the database is bounded (`GATEWAY_DB_CONNECT_TIMEOUT_S`, `GATEWAY_DB_POOL_TIMEOUT_S`,
`GATEWAY_DB_STATEMENT_TIMEOUT_S`), and `app.db.faults` turns an outage into a 503 at this one
boundary, so a frozen or unreachable database is an answer within seconds, never a hang.

The pool is SQLAlchemy's own (no overflow), with its queue counted (`CountedPool`): a checkout
that finds no idle connection and must wait is a wait in `app.pools.Waits`, whoever asked, so
`pool_gauge(engine)` publishes the database pool's queueing signal (`app.pools`).

Sizing (`GATEWAY_DB_POOL_SIZE`, default 20 per process): a connection is held for one statement
(about 1-3 ms), never across a provider call, so 20 connections carry thousands of requests in
flight; what they must fit is Postgres's `max_connections` (100 by default, 3 of them reserved
for superusers) across every process of every replica:

    pool_size x workers x replicas + ~10 (CLI, migrations, monitoring) <= max_connections - 3

With the defaults that is 4 processes (20 x 4 + 10 = 90 <= 97), e.g. 2 replicas x 2 workers;
beyond, lower the pool (10 fits 8 processes) or raise `max_connections`. A process past the
limit gets "too many clients" (503) under load, not at start: `serve` logs the arithmetic
(`connection_budget`), as a warning when one replica alone does not fit.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry
from sqlalchemy.util.concurrency import await_
from sqlalchemy.util.queue import AsyncAdaptedQueue, Empty

from app.db import faults
from app.pools import PoolGauge, Waits
from app.settings import Settings, normalize_database_url


def is_sqlite_url(url: str) -> bool:
    return url.startswith("sqlite")


#: how much longer than the server's `statement_timeout` the client waits for any answer: the
#: server cancels a slow statement itself (and the connection stays usable); the client-side
#: limit is for a database, or a network path to it, that has stopped answering altogether
CLIENT_GRACE_S = 5.0


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
        text = (
            f"database pool: {self.pool_size} connections x {self.workers} worker(s) = "
            f"{self.per_replica} per replica; Postgres max_connections {self.max_connections} "
            f"(less {RESERVED_CONNECTIONS} kept free) carries {self.replicas} such replica(s)"
        )
        if self.replicas == 0:
            fits = max(1, (self.max_connections - RESERVED_CONNECTIONS) // self.workers)
            text += (
                f": requests will fail with 'too many clients' under load; set "
                f"GATEWAY_DB_POOL_SIZE to at most {fits} or raise max_connections"
            )
        return text


async def max_connections(engine: AsyncEngine) -> int | None:
    """Postgres's `max_connections` (None on SQLite, or when it cannot be read)."""
    if engine.dialect.name != "postgresql":
        return None
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(text("SHOW max_connections"))).scalar_one())
    except Exception:  # preflight already reported an unusable database; this is advice only
        return None


def make_engine(
    url: str,
    *,
    pool_size: int = 20,
    pool_timeout_s: float = 30.0,
    connect_timeout_s: float = 5.0,
    statement_timeout_s: float = 30.0,
) -> AsyncEngine:
    """The process's engine. Every wait on the database is bounded: opening a connection
    (`connect_timeout_s`), checking one out of the pool (`pool_timeout_s`) and one statement
    (`statement_timeout_s`); a failure past any of them is a `DatabaseUnavailable` (503)."""
    url = normalize_database_url(url)
    kwargs: dict[str, Any] = {}
    if is_sqlite_url(url):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        # a locked file is waited for up to the statement timeout (SQLite's busy handler)
        kwargs["connect_args"] = {"timeout": statement_timeout_s}
        # SQLite has one writer at a time; competing connections wait in its busy handler,
        # which sleeps with back-off (p99 1.4 s at 16 concurrent requests). One pooled
        # connection makes them queue in asyncio instead, in arrival order; the queue moves
        # one statement at a time, so a waiter may need a statement timeout on top.
        kwargs.update(
            poolclass=CountedPool,
            pool_size=1,
            max_overflow=0,
            pool_timeout=pool_timeout_s + statement_timeout_s,
        )
    else:
        kwargs["connect_args"] = {
            "timeout": connect_timeout_s,
            "command_timeout": statement_timeout_s + CLIENT_GRACE_S,
            "server_settings": {"statement_timeout": str(math.ceil(statement_timeout_s * 1000))},
        }
        # No overflow: an overflow connection is closed as soon as it is returned, so a burst
        # above the pool size paid a fresh Postgres session (TLS-less, still ~3 ms of CPU on
        # both sides) for ~0.24 of all requests at 32 in flight. Beyond the pool, wait.
        kwargs.update(
            poolclass=CountedPool,
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=pool_timeout_s,
            pool_pre_ping=False,
        )
    engine = create_async_engine(url, **kwargs)
    if is_sqlite_url(url):
        _tune_sqlite(engine, busy_timeout_ms=math.ceil(statement_timeout_s * 1000))
    faults.install(engine)
    return engine


def engine_for(settings: Settings, **overrides: Any) -> AsyncEngine:
    """`make_engine` with every limit from the settings (`overrides` win, e.g. pool_size)."""
    options: dict[str, Any] = {
        "pool_size": settings.db_pool_size,
        "pool_timeout_s": settings.db_pool_timeout_s,
        "connect_timeout_s": settings.db_connect_timeout_s,
        "statement_timeout_s": settings.db_statement_timeout_s,
    }
    return make_engine(settings.database_url, **{**options, **overrides})


def _tune_sqlite(engine: AsyncEngine, *, busy_timeout_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
