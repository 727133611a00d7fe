"""`app.db.raw.raw_connection`: a good connection goes back to the pool without a greenlet; a
broken one is invalidated through one, and the pool's books stay right either way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import faults, raw
from app.db.engine import make_engine
from app.db.faults import DatabaseUnavailable
from app.db.raw import RawStatement, raw_connection

pytestmark = pytest.mark.anyio

SELECT_ONE = RawStatement("SELECT 1 AS one")


@pytest.fixture
async def engine(postgres_session_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(
        postgres_session_url, pool_size=2, pool_timeout_s=2.0, connect_timeout_s=1.0
    )
    yield engine
    await engine.dispose()


@pytest.fixture
def spawns(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of what `app.db.raw` ran through `greenlet_spawn`."""
    seen: list[str] = []
    real = raw.greenlet_spawn

    async def counted(fn: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(getattr(fn, "__name__", repr(fn)))
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(raw, "greenlet_spawn", counted)
    return seen


async def _terminate(url: str, pid: int) -> None:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()


async def _select_one(engine: AsyncEngine) -> int:
    async with raw_connection(engine) as connection:
        rows = await connection.fetch(SELECT_ONE, {})
    return int(rows[0]["one"])


def _pool_counts(engine: AsyncEngine) -> tuple[int, int]:
    pool: Any = engine.sync_engine.pool
    return pool.checkedin(), pool.checkedout()


async def test_a_good_connection_goes_back_without_a_greenlet(
    engine: AsyncEngine, spawns: list[str]
) -> None:
    for _ in range(3):
        assert await _select_one(engine) == 1
    assert spawns == []
    assert _pool_counts(engine) == (1, 0)


async def test_concurrent_checkouts_past_the_idle_ones_open_or_wait_as_before(
    engine: AsyncEngine,
) -> None:
    assert await _select_one(engine) == 1
    # five at once on a pool of two: one idle, one opened, three wait for a checkin
    assert await asyncio.gather(*(_select_one(engine) for _ in range(5))) == [1] * 5
    assert _pool_counts(engine) == (2, 0)


async def test_a_transaction_open_on_the_adapter_is_seen(engine: AsyncEngine) -> None:
    """Such a connection goes back through the greenlet: its reset rolls back (I/O)."""
    fairy = await engine.raw_connection()
    adapter: Any = fairy.dbapi_connection
    assert not raw._in_transaction(adapter)
    await raw.greenlet_spawn(adapter.cursor().execute, "SELECT 1")  # opens one
    assert raw._in_transaction(adapter)
    await raw.greenlet_spawn(fairy.close)
    assert not raw._in_transaction(adapter)  # the pool's reset rolled it back
    assert raw._in_transaction(object())  # an adapter that does not say: assume one is open


async def test_a_broken_connection_is_invalidated_and_replaced(
    engine: AsyncEngine, spawns: list[str], postgres_session_url: str
) -> None:
    async with raw_connection(engine) as connection:
        pid = (await connection.fetch(RawStatement("SELECT pg_backend_pid() AS pid"), {}))[0]
    await _terminate(postgres_session_url, pid["pid"])
    spawns.clear()
    # asyncpg says "connection is closed" or, when the FATAL of the terminated backend came in
    # while it was idle, "cannot switch to state ...": an outage (503) either way
    with pytest.raises(DatabaseUnavailable):
        await _select_one(engine)
    assert "invalidate" in spawns and "close" in spawns
    assert _pool_counts(engine)[1] == 0
    assert await _select_one(engine) == 1


def test_asyncpg_losing_track_of_a_dead_session_is_an_outage_that_drops_the_connection() -> None:
    # what asyncpg raises, raw or wrapped by SQLAlchemy, when a terminated backend's FATAL
    # arrived while the connection was idle: a 503 (not a 500) and never back into the pool
    lost = asyncpg.InternalClientError("cannot switch to state 11; another operation is running")
    wrapped = DBAPIError("SELECT 1", None, lost)
    for exc in (lost, wrapped):
        assert faults.is_outage(exc)
        assert not faults.connection_still_good(exc)
    connection = raw.RawConnection(driver=None)
    assert isinstance(connection._classified(lost, SELECT_ONE), DatabaseUnavailable)
    assert connection.broken is lost
    assert not faults.is_outage(asyncpg.UniqueViolationError("duplicate key"))
