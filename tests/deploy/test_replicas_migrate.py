"""N replicas starting together on an empty Postgres database migrate it once.

Three `image-gateway serve` processes start at the same time on an empty database; the
advisory lock in `migrations/env.py` queues their migrations: all three come up and serve, the
schema is at head, and the migrations ran exactly once (the later processes found nothing to do).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from alembic.script import ScriptDirectory

from app.db.migrate import alembic_config
from tests.support import databases
from tests.support.processes import free_port

pytestmark = pytest.mark.slow

CLI = Path(sys.executable).parent / "image-gateway"


@pytest.fixture
def empty_database() -> Iterator[str]:
    problem = databases.postgres_error()
    if problem:
        pytest.fail(problem) if os.environ.get("CI") == "true" else pytest.skip(problem)
    name = f"igw_replicas_{os.getpid()}"
    databases.drop_postgres_database(name)
    asyncio.run(databases._admin(f'CREATE DATABASE "{name}"'))
    base, _, _ = databases.ADMIN_URL.rpartition("/")
    yield f"{base}/{name}"
    databases.drop_postgres_database(name)


def test_three_replicas_migrate_an_empty_database_once(empty_database: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env |= {"DATABASE_URL": empty_database, "GATEWAY_LOG_LEVEL": "info"}
    ports = [free_port() for _ in range(3)]
    logs = [tmp_path / f"replica-{port}.log" for port in ports]
    processes = []
    for port, log_path in zip(ports, logs, strict=True):
        with log_path.open("wb") as log:
            processes.append(
                subprocess.Popen(
                    [str(CLI), "serve", "--port", str(port)],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    try:
        for port, process, log_path in zip(ports, processes, logs, strict=True):
            deadline = time.monotonic() + 120
            while True:
                assert process.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).is_success:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)
    head = ScriptDirectory.from_config(alembic_config(empty_database)).get_current_head()

    async def version() -> list[str]:
        conn = await asyncpg.connect(empty_database)
        try:
            return [row[0] for row in await conn.fetch("SELECT version_num FROM alembic_version")]
        finally:
            await conn.close()

    assert asyncio.run(version()) == [head]
    printed = [log_path.read_text() for log_path in logs]
    assert sum(text.count("Running upgrade  -> 0001") for text in printed) == 1, printed
