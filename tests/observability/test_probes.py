"""`/healthz` and `/readyz` (SPEC 8): ready, and each reason for not being ready.

ready                      catalog with models, database answering, migrations at head
database unreachable       503 "database: unreachable ..."; /healthz still 200 (no I/O)
migrations behind / none   503 "migrations: ... (run `image-gateway migrate`)"
catalog not loaded         503 "catalog: not loaded yet" (before the lifespan finished)
catalog without a model    503 "catalog: no usable model"
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from app.db.engine import make_engine
from app.main import create_app
from app.observability.readiness import code_heads
from app.settings import Settings
from tests.support.live import LiveGateway, write_catalog
from tests.support.processes import free_port

CATALOG = """
providers:
  local: {adapter: local-preview}
models:
  tiny:
    routes: [{provider: local}]
    pricing: {per_image: 0.001}
"""

EVERY_MODEL_HIDDEN = """
providers:
  remote:
    adapter: openai
    base_url: http://127.0.0.1:9
    api_key: ${TEST_OBSERVE_UNSET_PROVIDER_KEY}
models:
  remote-model:
    routes: [{provider: remote}]
    pricing: {per_image: 0.01}
"""


def run_sql(database_url: str, statement: str) -> None:
    async def execute() -> None:
        engine = make_engine(database_url)
        try:
            async with engine.begin() as connection:
                await connection.execute(text(statement))
        finally:
            await engine.dispose()

    asyncio.run(execute())


def restore_head(database_url: str) -> None:
    (head,) = code_heads()
    run_sql(
        database_url,
        "CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)",
    )
    run_sql(database_url, "DELETE FROM alembic_version")
    run_sql(database_url, f"INSERT INTO alembic_version VALUES ('{head}')")


def readyz(gateway: LiveGateway) -> httpx.Response:
    return httpx.get(f"{gateway.url}/readyz", timeout=30)


def test_ready(database_url: str, tmp_path: Path) -> None:
    with LiveGateway(
        database_url=database_url, catalog_path=write_catalog(tmp_path, CATALOG)
    ) as gw:
        response = readyz(gw)
        health = httpx.get(f"{gw.url}/healthz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready"}
    assert health.status_code == 200


def test_database_unreachable(tmp_path: Path) -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    with LiveGateway(database_url=dead, catalog_path=write_catalog(tmp_path, CATALOG)) as gw:
        response = readyz(gw)
        health = httpx.get(f"{gw.url}/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not_ready"
    assert len(body["reasons"]) == 1
    assert body["reasons"][0].startswith("database: unreachable")
    assert health.status_code == 200  # liveness never depends on the database


@pytest.mark.parametrize("how", ["behind", "never migrated"])
def test_migrations_not_at_head(database_url: str, tmp_path: Path, how: str) -> None:
    if how == "behind":
        run_sql(database_url, "UPDATE alembic_version SET version_num = '0001_initial_schema'")
    else:
        run_sql(database_url, "DROP TABLE alembic_version")
    try:
        catalog = write_catalog(tmp_path, CATALOG)
        with LiveGateway(database_url=database_url, catalog_path=catalog) as gw:
            response = readyz(gw)
    finally:  # the Postgres database is shared by the session's tests
        restore_head(database_url)
    assert response.status_code == 503
    (reason,) = response.json()["reasons"]
    assert reason.startswith("migrations:")
    found = "0001_initial_schema" if how == "behind" else "none"
    assert f"at revision {found}" in reason
    assert all(head in reason for head in code_heads())
    assert "image-gateway migrate" in reason


def test_catalog_not_loaded_yet(sqlite_template: Path, tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        gateway_config=write_catalog(tmp_path, CATALOG),
    )
    app = create_app(settings)  # no lifespan has run: nothing is open yet

    async def probe() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            return await client.get("/readyz")

    response = asyncio.run(probe())
    assert response.status_code == 503
    assert response.json()["reasons"] == ["catalog: not loaded yet (starting up)"]


def test_catalog_without_a_usable_model(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_OBSERVE_UNSET_PROVIDER_KEY", raising=False)
    catalog = write_catalog(tmp_path, EVERY_MODEL_HIDDEN)
    with LiveGateway(database_url=database_url, catalog_path=catalog) as gw:
        response = readyz(gw)
    assert response.status_code == 503
    (reason,) = response.json()["reasons"]
    assert reason.startswith("catalog: no usable model")
