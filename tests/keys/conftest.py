"""Fixtures for the key tests: account factories (the `engine` is tests/conftest.py's)."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from sqlalchemy import event, insert, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import Account
from app.keys.service import KeyService


@pytest.fixture
def keys(engine: AsyncEngine) -> KeyService:
    return KeyService(engine)


async def create_account(engine: AsyncEngine, *, status: str = "active") -> str:
    account_id = "acct_" + secrets.token_hex(8)
    async with engine.begin() as conn:
        await conn.execute(
            insert(Account).values(id=account_id, name="test", balance_micros=0, status=status)
        )
    return account_id


async def set_account_status(engine: AsyncEngine, account_id: str, status: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(update(Account).where(Account.id == account_id).values(status=status))


@pytest.fixture
async def account_id(engine: AsyncEngine) -> str:
    return await create_account(engine)


class QueryCounter:
    """Counts the SQL statements an engine sends."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.count = 0
        event.listen(engine.sync_engine, "before_cursor_execute", self._on_execute)

    def _on_execute(self, *_: Any) -> None:
        self.count += 1


@pytest.fixture
def queries(engine: AsyncEngine) -> QueryCounter:
    return QueryCounter(engine)
