"""Small async factories for tests: accounts (through the ledger, so the books balance) and
API keys (inserted directly: only sha256(secret) is stored, plus a display prefix)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import ApiKey
from app.ledger import Ledger


async def make_account(engine: AsyncEngine, balance_micros: int = 0, *, name: str = "test") -> str:
    account = await Ledger(engine).create_account(name=name, balance_micros=balance_micros)
    return account.id


async def make_key(
    engine: AsyncEngine,
    account_id: str,
    *,
    revoked: bool = False,
    expires_at: datetime | None = None,
    models: list[str] | None = None,
    rpm: int | None = None,
    max_concurrency: int | None = None,
    name: str = "test key",
) -> tuple[str, str]:
    """A key for the account; returns (key_id, secret)."""
    key_id = "key_" + secrets.token_hex(12)
    secret = "sk-" + secrets.token_urlsafe(32)
    async with engine.begin() as connection:
        await connection.execute(
            insert(ApiKey).values(
                id=key_id,
                account_id=account_id,
                name=name,
                key_hash=hashlib.sha256(secret.encode()).hexdigest(),
                prefix=secret[:11],
                models=models,
                rpm=rpm,
                max_concurrency=max_concurrency,
                # stored as UTC (SQLite keeps datetimes naive)
                expires_at=expires_at.astimezone(UTC) if expires_at else None,
                revoked_at=datetime.now(UTC) if revoked else None,
                created_at=datetime.now(UTC),
            )
        )
    return key_id, secret
