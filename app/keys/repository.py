"""All SQL about API keys. Every method runs on the caller's `AsyncConnection`, so the service
decides the transaction and a repository never commits.

Deleting a key removes its row (`DELETE`). Nothing points at `api_keys` with a foreign key:
`ledger_entries.key_id` and `request_log.key_id` are plain text, so a deleted key's history
stays intact and still groups under its id in usage reports. A revoked key keeps its row (and
keeps answering 403 `KEY_REVOKED` instead of 401); deleting is for keys that should be gone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, and_, delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.catalog.account_pricing import AccountPricing
from app.db.models import Account, ApiKey

logger = logging.getLogger(__name__)

_keys = cast(Table, ApiKey.__table__)
_accounts = cast(Table, Account.__table__)


def _as_utc(value: datetime) -> datetime:
    # SQLite hands datetimes back naive; everything we store is UTC
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One `api_keys` row. `key_hash` is not secret but is never sent to clients."""

    id: str
    account_id: str
    name: str
    prefix: str
    key_hash: str
    models: tuple[str, ...] | None
    rpm: int | None
    max_concurrency: int | None
    expires_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @classmethod
    def from_row(cls, row: Any) -> KeyRecord:
        return cls(
            id=row.id,
            account_id=row.account_id,
            name=row.name,
            prefix=row.prefix,
            key_hash=row.key_hash,
            models=None if row.models is None else tuple(row.models),
            rpm=row.rpm,
            max_concurrency=row.max_concurrency,
            expires_at=None if row.expires_at is None else _as_utc(row.expires_at),
            revoked_at=None if row.revoked_at is None else _as_utc(row.revoked_at),
            created_at=_as_utc(row.created_at),
        )


@dataclass(frozen=True, slots=True)
class KeyWithAccount:
    """What authentication needs in one round trip: the key and its account's status."""

    key: KeyRecord
    account_status: str
    #: the account's price list (`app.catalog.account_pricing`); None: catalog prices
    account_pricing: AccountPricing | None = None


def _pricing(text: str | None) -> AccountPricing | None:
    try:
        return AccountPricing.from_json(text)
    except ValueError:  # written through validation, so only a hand-edited row gets here
        logger.error("account pricing %r is unreadable; catalog prices apply", text)
        return None


class KeyRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def account_exists(self, account_id: str) -> bool:
        query = select(_accounts.c.id).where(_accounts.c.id == account_id)
        return (await self._conn.execute(query)).first() is not None

    async def get_by_hash(self, key_hash: str) -> KeyWithAccount | None:
        query = (
            select(
                _keys,
                _accounts.c.status.label("account_status"),
                _accounts.c.pricing.label("account_pricing"),
            )
            .join(_accounts, _accounts.c.id == _keys.c.account_id)
            .where(_keys.c.key_hash == key_hash)
        )
        row = (await self._conn.execute(query)).first()
        if row is None:
            return None
        return KeyWithAccount(
            KeyRecord.from_row(row), row.account_status, _pricing(row.account_pricing)
        )

    async def get(self, key_id: str) -> KeyRecord | None:
        row = (await self._conn.execute(select(_keys).where(_keys.c.id == key_id))).first()
        return None if row is None else KeyRecord.from_row(row)

    async def create(
        self,
        *,
        key_id: str,
        account_id: str,
        name: str,
        key_hash: str,
        prefix: str,
        models: list[str] | None,
        rpm: int | None,
        max_concurrency: int | None,
        expires_at: datetime | None,
        created_at: datetime,
    ) -> KeyRecord:
        # created_at is set here rather than by the server default so that it carries
        # microseconds on SQLite too, which the (created_at, id) keyset pagination relies on
        statement = (
            insert(_keys)
            .values(
                id=key_id,
                account_id=account_id,
                name=name,
                key_hash=key_hash,
                prefix=prefix,
                models=models,
                rpm=rpm,
                max_concurrency=max_concurrency,
                expires_at=expires_at,
                created_at=created_at,
            )
            .returning(*_keys.c)
        )
        return KeyRecord.from_row((await self._conn.execute(statement)).one())

    async def list(
        self,
        *,
        account_id: str | None,
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> list[KeyRecord]:
        """Up to `limit` keys in creation order, strictly after the `(created_at, id)` given."""
        query = select(_keys).order_by(_keys.c.created_at, _keys.c.id).limit(limit)
        if account_id is not None:
            query = query.where(_keys.c.account_id == account_id)
        if after is not None:
            created_at, key_id = after
            query = query.where(
                or_(
                    _keys.c.created_at > created_at,
                    and_(_keys.c.created_at == created_at, _keys.c.id > key_id),
                )
            )
        return [KeyRecord.from_row(row) for row in await self._conn.execute(query)]

    async def revoke(self, key_id: str, *, at: datetime) -> KeyRecord | None:
        """Mark revoked; revoking again keeps the first `revoked_at`."""
        await self._conn.execute(
            update(_keys)
            .where(_keys.c.id == key_id, _keys.c.revoked_at.is_(None))
            .values(revoked_at=at)
        )
        return await self.get(key_id)

    async def rotate(self, key_id: str, *, key_hash: str, prefix: str) -> KeyRecord | None:
        """Swap in a new secret in one UPDATE: the old hash is gone the moment it commits.

        Revoked keys are not rotated (None): a new secret for a dead key would be useless.
        """
        statement = (
            update(_keys)
            .where(_keys.c.id == key_id, _keys.c.revoked_at.is_(None))
            .values(key_hash=key_hash, prefix=prefix)
            .returning(*_keys.c)
        )
        row = (await self._conn.execute(statement)).first()
        return None if row is None else KeyRecord.from_row(row)

    async def delete(self, key_id: str) -> KeyRecord | None:
        statement = delete(_keys).where(_keys.c.id == key_id).returning(*_keys.c)
        row = (await self._conn.execute(statement)).first()
        return None if row is None else KeyRecord.from_row(row)
