"""Is this process fit to take traffic? (`GET /readyz`, SPEC 8)

Ready means all of:
- the catalog is loaded and has at least one usable model (a gateway whose every model is
  hidden, say for missing provider keys, can only refuse);
- the database answers a `SELECT 1` within `TIMEOUT_S`;
- the database's Alembic revisions are exactly the heads this code ships (a database behind
  the code, or ahead of it after a rollback, would fail requests in confusing ways).

Each failure is one line in `reasons`, naming what to do. Liveness (`/healthz`) is separate
and does no I/O: a database outage must take replicas out of the load balancer, not make the
orchestrator restart them.
"""

from __future__ import annotations

import asyncio
from functools import cache
from typing import Final

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.catalog.loader import Catalog
from app.db.faults import DatabaseUnavailable

TIMEOUT_S: Final = 2.0


@cache
def code_heads() -> frozenset[str]:
    """The Alembic head revision(s) of the migrations shipped with this code (read once, at
    the first probe: Alembic stays out of the app's import time)."""
    from alembic.script import ScriptDirectory

    from app.db.migrate import alembic_config

    return frozenset(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads())


async def database_reasons(engine: AsyncEngine) -> list[str]:
    try:
        async with asyncio.timeout(TIMEOUT_S), engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
            try:
                rows = await connection.execute(text("SELECT version_num FROM alembic_version"))
                revisions = frozenset(str(row[0]) for row in rows)
            except SQLAlchemyError:
                revisions = frozenset()
    except TimeoutError:
        return [f"database: no answer within {TIMEOUT_S:g} s"]
    except (SQLAlchemyError, OSError, DatabaseUnavailable) as exc:
        return [f"database: unreachable ({type(exc).__name__})"]
    heads = code_heads()
    if revisions != heads:
        found = ", ".join(sorted(revisions)) or "none"
        expected = ", ".join(sorted(heads))
        return [
            f"migrations: the database is at revision {found}, this code needs {expected} "
            "(run `image-gateway migrate`)"
        ]
    return []


def catalog_reasons(catalog: Catalog | None) -> list[str]:
    if catalog is None:
        return ["catalog: not loaded yet (starting up)"]
    if not catalog.models:
        return ["catalog: no usable model (every model is hidden; see the start-up warnings)"]
    return []


async def not_ready_reasons(catalog: Catalog | None, engine: AsyncEngine | None) -> list[str]:
    """Why this process should not take traffic now (empty: it is ready)."""
    reasons = catalog_reasons(catalog)
    if engine is not None:
        reasons += await database_reasons(engine)
    return reasons
