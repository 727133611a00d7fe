"""The database pool's queueing signal: a checkout that finds every connection busy is a wait.

Counted inside SQLAlchemy's pool (`app.db.engine.CountedPool`), so it covers every statement
of the process, not only the ledger's, and the seconds queued are exact (a clock the test
steps by hand).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy.exc
from sqlalchemy import text

from app.db.engine import make_engine
from app.db.pool import CountedPool, pool_gauge, urgent_checkouts
from tests.support.clock import FakeClock

pytestmark = pytest.mark.anyio


async def until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"never happened: {what}")


async def test_a_checkout_queued_behind_a_busy_pool_is_counted_with_its_seconds(
    database_url: str,
) -> None:
    engine = make_engine(database_url, pool_size=1)
    try:
        gauge = pool_gauge(engine)
        assert gauge is not None and gauge.name == "database" and gauge.size == 1
        pool = engine.sync_engine.pool
        assert isinstance(pool, CountedPool)
        clock = FakeClock()
        pool.waits.clock = clock
        async with engine.connect() as first:  # opens the one connection: no wait
            await first.execute(text("SELECT 1"))
            assert (gauge.in_use(), gauge.waiting(), gauge.waits()) == (1, 0, 0)

            async def second() -> int:
                async with engine.connect() as conn:
                    return int((await conn.execute(text("SELECT 2"))).scalar_one())

            queued = asyncio.create_task(second())
            await until(lambda: gauge.waiting() == 1, "the second checkout queues")
            assert gauge.waits() == 1
            clock.advance(1.75)
            assert gauge.wait_seconds() == 1.75
        assert await queued == 2
        assert (gauge.in_use(), gauge.waiting(), gauge.waits()) == (0, 0, 1)
        assert gauge.wait_seconds() == 1.75
        async with engine.connect() as again:  # an idle connection is there: no wait
            await again.execute(text("SELECT 3"))
        assert (gauge.waits(), gauge.wait_seconds()) == (1, 1.75)
    finally:
        await engine.dispose()


async def test_the_counts_survive_a_dispose(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/pool.db", pool_size=1)
    try:
        gauge = pool_gauge(engine)
        assert gauge is not None
        before = engine.sync_engine.pool
        assert isinstance(before, CountedPool)
        before.waits.total = 5
        await engine.dispose()  # SQLAlchemy recreates the pool
        after = engine.sync_engine.pool
        assert after is not before and isinstance(after, CountedPool)
        assert after.waits is before.waits and gauge.waits() == 5
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            assert gauge.in_use() == 1
    finally:
        await engine.dispose()


async def test_an_urgent_checkout_is_served_before_the_queue_and_then_the_queue_in_order(
    database_url: str,
) -> None:
    engine = make_engine(database_url, pool_size=1)
    served: list[str] = []

    async def statement(name: str) -> None:
        async with engine.connect() as conn:
            served.append(name)
            await conn.execute(text("SELECT 1"))

    async def urgent(name: str) -> None:
        with urgent_checkouts():
            await statement(name)

    try:
        gauge = pool_gauge(engine)
        assert gauge is not None
        async with engine.connect() as busy:
            await busy.execute(text("SELECT 1"))
            tasks = [asyncio.create_task(statement("settle-1"))]
            await until(lambda: gauge.waiting() == 1, "settle-1 queues")
            tasks.append(asyncio.create_task(statement("settle-2")))
            await until(lambda: gauge.waiting() == 2, "settle-2 queues")
            tasks.append(asyncio.create_task(urgent("hold-batch")))
            await until(lambda: gauge.waiting() == 3, "the batch queues")
        await asyncio.gather(*tasks)
        assert served == ["hold-batch", "settle-1", "settle-2"]
        assert (gauge.in_use(), gauge.waiting(), gauge.waits()) == (0, 0, 3)
    finally:
        await engine.dispose()


async def test_an_urgent_checkout_that_times_out_leaves_the_pool_whole(tmp_path: Path) -> None:
    engine = make_engine(
        f"sqlite:///{tmp_path}/pool.db", pool_size=1, pool_timeout_s=0.05, statement_timeout_s=0.05
    )
    try:
        gauge = pool_gauge(engine)
        assert gauge is not None
        async with engine.connect() as busy:
            await busy.execute(text("SELECT 1"))
            with pytest.raises(sqlalchemy.exc.TimeoutError), urgent_checkouts():
                async with engine.connect():
                    pass
            assert (gauge.waiting(), gauge.waits()) == (0, 1)
        # the connection went back to the pool, not to the urgent waiter that gave up
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 5"))).scalar_one() == 5
        assert (gauge.in_use(), gauge.waits()) == (0, 1)
    finally:
        await engine.dispose()


def test_the_pool_logs_under_sqlalchemys_name(tmp_path: Path) -> None:
    """So the `sqlalchemy.pool` level floor keeps its INFO lines out of operators' output."""
    engine = make_engine(f"sqlite:///{tmp_path}/pool.db", pool_size=1)
    assert engine.sync_engine.pool.logger.name.startswith("sqlalchemy.pool.")
