"""Database engines and sessions.

One `AsyncEngine` per process, created at start-up from `Settings.database_url` (already
normalized to an async driver: asyncpg for Postgres, aiosqlite for SQLite). SQLite gets WAL and
a busy timeout so several connections (and the CLI beside a running server) can share the file.

Every wait on the database is bounded (`GATEWAY_DB_CONNECT_TIMEOUT_S`, `GATEWAY_DB_POOL_TIMEOUT_S`,
`GATEWAY_DB_STATEMENT_TIMEOUT_S`), and `app.db.faults` turns an outage into a 503 at this one
boundary, so a frozen or unreachable database is an answer within seconds, never a hang.

The pool is SQLAlchemy's own, no overflow, with its queue counted and its size checked against
Postgres's `max_connections` (`app.db.pool`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

from app.db import faults
from app.db.pool import CountedPool
from app.settings import Settings, normalize_database_url


def is_sqlite_url(url: str) -> bool:
    return url.startswith("sqlite")


#: how much longer than the server's `statement_timeout` the client waits for any answer: the
#: server cancels a slow statement itself (and the connection stays usable); the client-side
#: limit is for a database, or a network path to it, that has stopped answering altogether
CLIENT_GRACE_S = 5.0


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
            # the idle connection used last goes out first: at low concurrency one warm
            # Postgres backend serves the requests instead of all of them in turn
            pool_use_lifo=True,
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
