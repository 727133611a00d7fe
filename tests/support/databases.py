"""Test databases: a migrated SQLite template file and a private Postgres database per run.

Postgres comes from `TEST_POSTGRES_URL` (default: the machine's trust-auth server, database
`test`, used only as the maintenance connection). Each test session creates its own database
`igw_test_<pid>`, migrates it with Alembic, and drops it at the end. Tests get a clean slate by
truncation (Postgres) or by a fresh copy of the migrated template (SQLite): both far faster
than migrating per test.

With CI=true a missing Postgres is an error, never a silent skip.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import asyncpg

from app.db.migrate import upgrade
from app.db.models import Base

ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
TABLES = [table.name for table in reversed(Base.metadata.sorted_tables)]


def _with_database(url: str, database: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{database}"


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def postgres_error() -> str | None:
    """None when the test Postgres answers, else why not."""
    try:
        asyncio.run(_admin("SELECT 1"))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"Postgres at {ADMIN_URL} is not reachable: {exc!r}"
    return None


def create_postgres_database(name: str) -> str:
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    url = _with_database(ADMIN_URL, name)
    upgrade(url)
    return url


def drop_postgres_database(name: str) -> None:
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def truncate_postgres(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY")
    finally:
        await conn.close()


def create_sqlite_template(folder: Path) -> Path:
    path = folder / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


def fresh_sqlite_copy(template: Path, folder: Path) -> str:
    target = folder / "gateway.db"
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"
