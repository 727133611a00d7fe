"""Hot statements on the asyncpg connection itself, out of the engine's own pool.

SQLAlchemy's per-statement machinery (a `Connection`, execution options, the isolation-level
switch, events, the cursor adapter, result processing) costs more CPU than a short statement
does: `raw_connection(engine)` checks a connection out of the SAME pool (so pool sizing, its
waits and `urgent_checkouts` keep working) and `RawConnection.fetch` runs a `RawStatement` on
the driver connection, autocommitted (no transaction is opened), prepared once per connection
(asyncpg's statement cache).

Errors go through the one classifier, `app.db.faults.is_outage`: an outage is
`DatabaseUnavailable` (503, Retry-After) and the connection is invalidated unless the server
only cancelled the statement (`statement_timeout`); anything else is the driver's error
wrapped as SQLAlchemy would wrap it (`IntegrityError` for class 23, `DataError` for 22,
`DBAPIError` otherwise; `.orig` keeps the SQLSTATE, so a deadlock victim is still seen).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn

from app.db.faults import DatabaseUnavailable, connection_still_good, is_outage, sqlstate

logger = logging.getLogger(__name__)

#: `:name` binds as SQLAlchemy's `text()` reads them (not `::type` casts)
_BIND = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")


class RawStatement:
    """SQL written with `:name` binds, run with positional `$n` ones (same SQL otherwise)."""

    def __init__(self, sql: str) -> None:
        self.names: list[str] = []

        def number(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.names:
                self.names.append(name)
            return f"${self.names.index(name) + 1}"

        self.sql = _BIND.sub(number, sql)

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        return [params[name] for name in self.names]


class RawConnection:
    def __init__(self, driver: Any) -> None:
        self._driver = driver
        self.broken: BaseException | None = None

    async def fetch(self, statement: RawStatement, params: Mapping[str, Any]) -> Sequence[Any]:
        """The statement's rows (asyncpg `Record`s, by column name)."""
        try:
            rows: Sequence[Any] = await self._driver.fetch(statement.sql, *statement.args(params))
        except Exception as exc:
            raise self._classified(exc, statement) from exc
        return rows

    def _classified(self, exc: Exception, statement: RawStatement) -> Exception:
        if is_outage(exc):
            if not connection_still_good(exc):
                self.broken = exc  # no answer, or a broken connection: never reuse it
            logger.error("database unavailable: %s: %s", type(exc).__name__, exc)
            return DatabaseUnavailable()
        code = sqlstate(exc) or ""
        wrapper = {"23": IntegrityError, "22": DataError}.get(code[:2], DBAPIError)
        return wrapper(statement.sql, None, exc, hide_parameters=True)


@asynccontextmanager
async def raw_connection(engine: AsyncEngine) -> AsyncIterator[RawConnection]:
    """A pooled connection's driver connection; back to the pool (or invalidated) after.

    A good connection with no transaction open goes back without a greenlet: its checkin
    (the pool's reset, a no-op rollback on the adapter, the queue) does no I/O, and
    `greenlet_spawn` starts a greenlet on a freshly mapped stack per call: measured at about
    30 us of the 64 px request's ~2 ms at concurrency 1, per statement (docs/decisions.md).
    A broken connection is invalidated, and one in a transaction closed, through one."""
    fairy = await engine.raw_connection()
    raw = RawConnection(fairy.driver_connection)
    try:
        yield raw
    finally:
        if raw.broken is not None:
            await greenlet_spawn(fairy.invalidate, raw.broken)
            await greenlet_spawn(fairy.close)
        elif _in_transaction(fairy.dbapi_connection):
            await greenlet_spawn(fairy.close)  # the reset rolls a transaction back: I/O
        else:
            fairy.close()


def _in_transaction(adapter: Any) -> bool:
    """Whether SQLAlchemy's asyncpg adapter has a transaction open (it opens one on its own
    cursors, never for the raw statements); unknown counts as open."""
    return getattr(adapter, "_transaction", True) is not None
