"""Telling a database outage from a statement the database refused, at one boundary.

    engine ──(every statement, commit, rollback, connect)──> handle_error hook (`install`)
        outage?  yes ──> DatabaseUnavailable (503 SERVICE_UNAVAILABLE, Retry-After), and a
                         connection left in an unknown state is invalidated, so the pool
                         opens a fresh one next time instead of handing out a dead one
                 no  ──> the driver's error, unchanged: a deadlock victim (40P01) for the
                         ledger to retry, an IntegrityError the caller turns into a 409, or
                         a value the database refused, which `app.api.errors` answers 400 (and
                         logs: validation should have caught it before any SQL ran)

An **outage** is anything that says "the database did not answer" rather than "the database
answered no": the connection refused, reset or timed out (OSError, TimeoutError: asyncpg's
connect `timeout` and `command_timeout`), the driver's interface errors (a closed connection),
and the SQLSTATE classes 08 (connection exception), 53 (insufficient resources: too many
clients), 57 (operator intervention: `statement_timeout`, shutdown, cannot connect now) and 58
(system error). On SQLite an `OperationalError` is one ("database is locked" after the busy
timeout, disk I/O errors, an unopenable file) unless it names missing schema ("no such table":
not migrated) or bad SQL; its constraint and data errors are other classes.

The message never carries the driver's text, which names the database host and port.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy.engine import Dialect, ExceptionContext
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.errors import ServiceUnavailable

logger = logging.getLogger(__name__)

#: SQLSTATE classes that mean the database could not do the work, whatever the statement
_OUTAGE_CLASSES = frozenset({"08", "53", "57", "58"})
#: the server cancelled the statement (our `statement_timeout`): the connection is still good
_STATEMENT_CANCELLED = "57014"
#: a whole number of seconds: how soon a client may try again
RETRY_AFTER_S = 2


class DatabaseUnavailable(ServiceUnavailable):
    """The database did not answer in time, or at all (503 with `Retry-After`)."""

    def __init__(self) -> None:
        super().__init__(
            "The gateway's database is unavailable; please retry.", retry_after=RETRY_AFTER_S
        )


def sqlstate(exc: BaseException | None) -> str | None:
    """The Postgres SQLSTATE behind `exc` (SQLAlchemy wraps the adapter wraps asyncpg)."""
    seen = 0
    while exc is not None and seen < 8:
        code = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
        if isinstance(code, str) and len(code) == 5:
            return code
        orig = getattr(exc, "orig", None)
        exc = orig if orig is not None and orig is not exc else exc.__cause__
        seen += 1
    return None


def is_outage(exc: BaseException) -> bool:
    """True when `exc` says the database did not answer, not that it refused the statement."""
    if isinstance(exc, DatabaseUnavailable | PoolTimeoutError | OSError | TimeoutError):
        return True
    if _is_schema_error(exc):
        return False
    if isinstance(exc, InterfaceError | OperationalError | sqlite3.OperationalError):
        return True
    if isinstance(exc, asyncpg.InterfaceError):  # raw driver use (`app.db.raw`): closed
        return True
    if _driver_lost_track(exc):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    code = sqlstate(exc)
    return code is not None and code[:2] in _OUTAGE_CLASSES


def _driver_lost_track(exc: BaseException) -> bool:
    """asyncpg's own state machine gave up: seen when the server ended the session (a
    terminated backend's FATAL arriving while the connection was idle) and the next statement
    found the protocol mid-operation ("cannot switch to state ..."). The session is gone:
    an outage, and the connection is never reused."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    return isinstance(orig, asyncpg.InternalClientError)


def _is_schema_error(exc: BaseException) -> bool:
    """SQLite files every problem as OperationalError, a missing table (not migrated) too:
    that is a setup or code problem the caller should see as it is, not an outage."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if not isinstance(orig, sqlite3.OperationalError):
        return False
    message = str(orig)
    return message.startswith("no such ") or "syntax error" in message


def connection_still_good(exc: BaseException) -> bool:
    """The database answered "not now" on a working connection: keep it in the pool."""
    return sqlstate(exc) == _STATEMENT_CANCELLED or isinstance(exc, sqlite3.OperationalError)


def _on_error(context: ExceptionContext) -> BaseException | None:
    original = context.original_exception
    wrapped = context.sqlalchemy_exception
    if not (is_outage(original) or (wrapped is not None and is_outage(wrapped))):
        return None
    if not connection_still_good(original):
        # no answer, or a broken connection: its state is unknown, so never reuse it
        context.is_disconnect = True
    logger.error("database unavailable: %s: %s", type(original).__name__, original)
    return DatabaseUnavailable()


def _connect(dialect: Dialect, _record: Any, cargs: Any, cparams: Any) -> Any:
    # Connecting is outside `handle_error`: the driver's OSError / TimeoutError would arrive
    # raw. Any failure to open a connection (refused, timed out, too many clients, a bad
    # password) means no statement can run: an outage, whatever the driver called it.
    try:
        return dialect.connect(*cargs, **cparams)
    except Exception as exc:
        logger.error("database unavailable: cannot connect: %s: %s", type(exc).__name__, exc)
        raise DatabaseUnavailable() from exc


def install(engine: AsyncEngine) -> None:
    """Route every failure on `engine`, connecting included, through the outage check."""
    event.listen(engine.sync_engine, "handle_error", _on_error)
    event.listen(engine.sync_engine, "do_connect", _connect)
