"""A gateway in its own process with a seeded account and key: for tests that measure the
process (peak RSS, event-loop stalls, its whole log) or drive it from outside (the fuzzer).

    with served_gateway(tmp_path, database_url, CATALOG, GATEWAY_LOG_LEVEL="debug") as gw:
        httpx.post(f"{gw.url}/v1/images/generations", headers=gw.auth, ...)
        gw.peak_rss_bytes()
    # afterwards: the process has stopped and every account's books balanced
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.engine import make_engine
from tests.support import factories
from tests.support.books import assert_books_balance
from tests.support.live import ADMIN_TOKEN
from tests.support.processes import GatewayProcess

T = TypeVar("T")


def run_db(database_url: str, work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    async def wrapped() -> T:
        engine = make_engine(database_url)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    return asyncio.run(wrapped())


async def assert_every_account_balances(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        ids = (await connection.execute(text("SELECT id FROM accounts"))).scalars().all()
        pending = (
            await connection.execute(
                text("SELECT count(*) FROM request_log WHERE state = 'pending'")
            )
        ).scalar_one()
    for account_id in ids:
        await assert_books_balance(engine, account_id)
    assert pending == 0, f"{pending} requests left pending"


@dataclass
class ServedGateway:
    process: GatewayProcess
    database_url: str
    account_id: str
    secret: str

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"}

    @property
    def admin_auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    @property
    def pid(self) -> int:
        assert self.process.process is not None
        return self.process.process.pid

    def _status(self, field: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no {field} in /proc/{self.pid}/status")

    def rss_bytes(self) -> int:
        return self._status("VmRSS")

    def peak_rss_bytes(self) -> int:
        """The process's high-water mark of resident memory since it started (or since
        `reset_peak_rss`)."""
        return self._status("VmHWM")

    def reset_peak_rss(self) -> None:
        """Start a new high-water mark at the current RSS (Linux: `clear_refs` value 5)."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def log(self) -> str:
        return self.process.log_path.read_text(errors="replace")


@contextmanager
def served_gateway(
    folder: Path,
    database_url: str,
    catalog: str,
    *,
    balance_micros: int = 100_000_000,
    key_options: dict[str, Any] | None = None,
    **env: str,
) -> Iterator[ServedGateway]:
    catalog_path = folder / "served-models.yaml"
    catalog_path.write_text(catalog)

    async def seed(engine: AsyncEngine) -> tuple[str, str]:
        account_id = await factories.make_account(engine, balance_micros=balance_micros)
        _, secret = await factories.make_key(engine, account_id, **(key_options or {}))
        return account_id, secret

    account_id, secret = run_db(database_url, seed)
    process = GatewayProcess(
        database_url=database_url,
        catalog=catalog_path,
        log_dir=folder,
        GATEWAY_ADMIN_TOKEN=ADMIN_TOKEN,
        **env,
    )
    process.start()
    try:
        process.wait_ready()
        yield ServedGateway(process, database_url, account_id, secret)
    finally:
        process.stop()
    run_db(database_url, assert_every_account_balances)
