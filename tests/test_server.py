"""`serve`'s sizing for thousands of slow generations: the listen backlog and the database
pool's share of Postgres's `max_connections`."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from app.db.engine import make_engine
from app.db.pool import RESERVED_CONNECTIONS, ConnectionBudget, max_connections
from app.server import UVICORN_BACKLOG, log_connection_budget, uvicorn_config
from app.settings import Settings


def test_the_listen_backlog_holds_a_burst_as_large_as_the_upstream_pool() -> None:
    settings = Settings(upstream_max_connections=4096)
    assert uvicorn_config(settings, "127.0.0.1", 8000).backlog == 4096
    assert UVICORN_BACKLOG == 2048  # uvicorn's own default, which 2,000 requests at once fill
    small = Settings(upstream_max_connections=100)
    assert uvicorn_config(small, "127.0.0.1", 8000).backlog == UVICORN_BACKLOG


def test_the_default_pool_fits_four_processes_in_default_postgres() -> None:
    budget = ConnectionBudget(pool_size=Settings().db_pool_size, workers=2, max_connections=100)
    assert (budget.per_replica, budget.replicas) == (40, 2)  # 2 x 40 + 13 kept free <= 100
    assert "carries 2 such replica(s)" in budget.describe()
    assert "too many clients" not in budget.describe()


def test_a_layout_that_cannot_fit_says_what_would() -> None:
    budget = ConnectionBudget(pool_size=20, workers=8, max_connections=100)
    assert budget.replicas == 0
    assert "set GATEWAY_DB_POOL_SIZE to at most 10 or raise max_connections" in budget.describe()


def test_max_connections_is_read_from_postgres_and_skipped_on_sqlite(
    postgres_session_url: str, tmp_path: Path
) -> None:
    async def read(url: str) -> int | None:
        engine = make_engine(url, pool_size=1)
        try:
            return await max_connections(engine)
        finally:
            await engine.dispose()

    limit = asyncio.run(read(postgres_session_url))
    assert isinstance(limit, int) and limit > RESERVED_CONNECTIONS
    assert asyncio.run(read(f"sqlite:///{tmp_path}/budget.db")) is None


def test_serve_warns_when_one_replica_alone_would_exhaust_postgres(
    postgres_session_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(database_url=postgres_session_url, db_pool_size=1000)
    with caplog.at_level(logging.INFO, logger="app.server"):
        log_connection_budget(settings, workers=1)
    (record,) = [r for r in caplog.records if r.name == "app.server"]
    assert record.levelno == logging.WARNING
    assert "1000 connections x 1 worker(s)" in record.getMessage()
    assert "set GATEWAY_DB_POOL_SIZE to at most" in record.getMessage()
