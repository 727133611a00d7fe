"""Shared fixtures: the database backends every storage-touching test runs on.

`database_url` is parametrized over SQLite and Postgres, so a test that takes it runs twice;
`engine` is the application's engine on it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.engine import make_engine
from tests.support import databases

IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return databases.create_sqlite_template(tmp_path_factory.mktemp("sqlite-template"))


@pytest.fixture(scope="session")
def postgres_session_url() -> Iterator[str]:
    problem = databases.postgres_error()
    if problem:
        if IN_CI:
            pytest.fail(f"CI=true and {problem}", pytrace=False)
        pytest.skip(problem)
    name = f"igw_test_{os.getpid()}"
    url = databases.create_postgres_database(name)
    yield url
    databases.drop_postgres_database(name)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A clean, migrated database (URL in the plain form operators write)."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        return databases.fresh_sqlite_copy(template, tmp_path)
    url: str = request.getfixturevalue("postgres_session_url")
    asyncio.run(databases.truncate_postgres(url))
    return url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database_url)
    yield engine
    await engine.dispose()
