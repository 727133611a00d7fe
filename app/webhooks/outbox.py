"""The webhook outbox's SQL: writing events, and the scans and clean-up around them.

Event writers join the caller's unit of work (a money statement on SQLite, a budgeted hold,
or a transaction of their own), so an event exists exactly when its cause committed; the
Postgres money statements write `balance.below_threshold` inside their own SQL
(`app.ledger.postgres_sql.ALERT`). Like every repository it never commits.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db.models import Account, ApiKey, LedgerEntry, WebhookDelivery, WebhookEvent
from app.webhooks.events import BALANCE_BELOW_THRESHOLD, EventDraft, balance_dedupe_key


def as_utc(value: datetime) -> datetime:
    """SQLite hands datetimes back naive; everything stored is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class OutboxRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self._postgres = conn.dialect.name == "postgresql"

    async def insert_event(self, draft: EventDraft, *, now: datetime) -> bool:
        """Write an event to the outbox; False if its `dedupe_key` was already used."""
        dialect_insert = pg_insert if self._postgres else sqlite_insert
        statement = (
            dialect_insert(WebhookEvent)
            .values(
                id=draft.id,
                event_type=draft.event_type,
                account_id=draft.account_id,
                data=orjson.dumps(draft.data).decode(),
                dedupe_key=draft.dedupe_key,
                fanned_out=False,
                created_at=now,
            )
            .on_conflict_do_nothing()
            .returning(WebhookEvent.id)
        )
        return (await self._conn.execute(statement)).first() is not None

    async def alert_if_crossed_below(
        self, *, account_id: str, balance_after_micros: int, debited_micros: int, now: datetime
    ) -> None:
        """SQLite's money path: the `balance.below_threshold` event of a debit that crossed
        the account's threshold (Postgres does the same inside the money statement)."""
        threshold = (
            await self._conn.execute(
                select(Account.low_balance_threshold_micros).where(Account.id == account_id)
            )
        ).scalar_one_or_none()
        if threshold is None:
            return
        if not balance_after_micros < threshold <= balance_after_micros + debited_micros:
            return
        epoch = (
            await self._conn.execute(
                select(func.coalesce(func.max(LedgerEntry.id), 0)).where(
                    LedgerEntry.account_id == account_id,
                    LedgerEntry.kind.in_(("topup", "adjustment")),
                    LedgerEntry.amount_micros > 0,
                )
            )
        ).scalar_one()
        await self.insert_event(
            EventDraft(
                BALANCE_BELOW_THRESHOLD,
                {
                    "account_id": account_id,
                    "balance_micros": balance_after_micros,
                    "threshold_micros": int(threshold),
                },
                account_id=account_id,
                dedupe_key=balance_dedupe_key(account_id, int(threshold), int(epoch)),
            ),
            now=now,
        )

    async def keys_expiring(
        self, *, now: datetime, until: datetime, limit: int, after_id: str | None = None
    ) -> list[tuple[str, str, str, datetime]]:
        """(key id, account id, name, expires_at) of unrevoked keys expiring in (now, until],
        by key id, from after `after_id` (the last of the previous page)."""
        statement = (
            select(ApiKey.id, ApiKey.account_id, ApiKey.name, ApiKey.expires_at)
            .where(
                ApiKey.revoked_at.is_(None),
                ApiKey.expires_at.is_not(None),
                ApiKey.expires_at > now,
                ApiKey.expires_at <= until,
            )
            .order_by(ApiKey.id)
            .limit(limit)
        )
        if after_id is not None:
            statement = statement.where(ApiKey.id > after_id)
        rows = await self._conn.execute(statement)
        return [(r.id, r.account_id, r.name, as_utc(r.expires_at)) for r in rows]

    async def prune(self, *, before: datetime) -> int:
        """Forget finished deliveries, and events with nothing left to send, created before
        `before`; how many rows went. Pending deliveries and their events always stay."""
        deliveries = await self._conn.execute(
            delete(WebhookDelivery).where(
                WebhookDelivery.state != "pending", WebhookDelivery.created_at < before
            )
        )
        pending = select(WebhookDelivery.id).where(WebhookDelivery.event_id == WebhookEvent.id)
        events = await self._conn.execute(
            delete(WebhookEvent).where(
                WebhookEvent.fanned_out.is_(True),
                WebhookEvent.created_at < before,
                ~pending.exists(),
            )
        )
        return int(deliveries.rowcount or 0) + int(events.rowcount or 0)
