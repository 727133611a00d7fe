"""Webhook endpoints and the delivery queue (the outbox itself: `app.webhooks.outbox`).

Like every repository here it runs on the caller's connection and never commits.

Delivery queue, safe with any number of processes:
- `fan_out` turns new events into one `pending` delivery per subscribed endpoint and marks
  them fanned out, in one transaction; UNIQUE(event_id, endpoint_id) makes a repeat harmless
  and Postgres skips events another process is fanning out (`FOR UPDATE SKIP LOCKED`).
- `claim` leases due deliveries with ONE statement (`UPDATE ... WHERE id IN (SELECT ... FOR
  UPDATE SKIP LOCKED) RETURNING`), counting the attempt; SQLite serializes writers, which
  gives the same exclusivity. A lease that runs out (its process died mid-send) makes the
  delivery claimable again: at least once, never two senders of the same attempt at a time.
- `finish_attempt` records the outcome only while the lease is still this sender's (owner and
  attempt number match), so a sender that outlived its lease cannot overwrite a newer attempt.

Times come from the caller's clock (injected in tests), written as UTC instants.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import orjson
from sqlalchemy import Table, and_, delete, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db.models import (
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)


def as_utc(value: datetime) -> datetime:
    """SQLite hands datetimes back naive; everything stored is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_endpoints = cast(Table, WebhookEndpoint.__table__)
_events = cast(Table, WebhookEvent.__table__)
_deliveries = cast(Table, WebhookDelivery.__table__)


@dataclass(frozen=True, slots=True)
class EndpointRecord:
    id: str
    url: str
    description: str | None
    event_types: tuple[str, ...]
    account_id: str | None
    secret: str
    enabled: bool
    created_at: datetime
    updated_at: datetime

    def wants(self, event_type: str, account_id: str | None) -> bool:
        if not self.enabled or event_type not in self.event_types:
            return False
        return self.account_id is None or account_id is None or self.account_id == account_id

    @classmethod
    def from_row(cls, row: Any) -> EndpointRecord:
        return cls(
            id=row.id,
            url=row.url,
            description=row.description,
            event_types=tuple(row.event_types),
            account_id=row.account_id,
            secret=row.secret,
            enabled=bool(row.enabled),
            created_at=as_utc(row.created_at),
            updated_at=as_utc(row.updated_at),
        )


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    id: int
    event_id: str
    endpoint_id: str
    event_type: str
    state: str
    attempts: int
    next_attempt_at: datetime
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> DeliveryRecord:
        return cls(
            id=int(row.id),
            event_id=row.event_id,
            endpoint_id=row.endpoint_id,
            event_type=row.event_type,
            state=row.state,
            attempts=int(row.attempts),
            next_attempt_at=as_utc(row.next_attempt_at),
            last_attempt_at=None if row.last_attempt_at is None else as_utc(row.last_attempt_at),
            last_status_code=row.last_status_code,
            last_error=row.last_error,
            created_at=as_utc(row.created_at),
            finished_at=None if row.finished_at is None else as_utc(row.finished_at),
        )


@dataclass(frozen=True, slots=True)
class ClaimedAttempt:
    """One leased delivery attempt with everything needed to send it."""

    delivery_id: int
    attempt: int
    event_id: str
    event_type: str
    event_created_at: datetime
    data: dict[str, Any]
    endpoint_id: str
    url: str
    secret: str


_DELIVERY_COLUMNS = (
    _deliveries.c.id,
    _deliveries.c.event_id,
    _deliveries.c.endpoint_id,
    _events.c.event_type,
    _deliveries.c.state,
    _deliveries.c.attempts,
    _deliveries.c.next_attempt_at,
    _deliveries.c.last_attempt_at,
    _deliveries.c.last_status_code,
    _deliveries.c.last_error,
    _deliveries.c.created_at,
    _deliveries.c.finished_at,
)


class WebhookRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self._postgres = conn.dialect.name == "postgresql"

    # endpoints ---------------------------------------------------------------------------
    async def insert_endpoint(self, values: dict[str, Any]) -> None:
        await self._conn.execute(insert(WebhookEndpoint).values(**values))

    async def get_endpoint(self, endpoint_id: str) -> EndpointRecord | None:
        row = (
            await self._conn.execute(select(_endpoints).where(_endpoints.c.id == endpoint_id))
        ).first()
        return EndpointRecord.from_row(row) if row else None

    async def list_endpoints(
        self, *, limit: int | None = None, after_id: str | None = None
    ) -> list[EndpointRecord]:
        statement = select(_endpoints).order_by(_endpoints.c.id)
        if after_id is not None:
            statement = statement.where(_endpoints.c.id > after_id)
        if limit is not None:
            statement = statement.limit(limit)
        return [EndpointRecord.from_row(row) for row in await self._conn.execute(statement)]

    async def update_endpoint(self, endpoint_id: str, values: dict[str, Any]) -> bool:
        result = await self._conn.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id == endpoint_id)
            .values(**values)
            .returning(WebhookEndpoint.id)
        )
        return result.first() is not None

    async def delete_endpoint(self, endpoint_id: str) -> bool:
        """Remove the endpoint and its deliveries not yet finished (nothing will send them)."""
        await self._conn.execute(
            delete(WebhookDelivery).where(
                WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.state == "pending"
            )
        )
        result = await self._conn.execute(
            delete(WebhookEndpoint)
            .where(WebhookEndpoint.id == endpoint_id)
            .returning(WebhookEndpoint.id)
        )
        return result.first() is not None

    # deliveries --------------------------------------------------------------------------
    async def fan_out(self, *, now: datetime, limit: int) -> int:
        """Create the deliveries of up to `limit` new events; how many events were handled.

        The first statement marks the events fanned out and returns them (a write first, so
        SQLite takes its write lock at once instead of upgrading a read lock, which fails
        with BUSY under concurrent writers); the deliveries follow in the same transaction.
        """
        pick = (
            select(_events.c.id)
            .where(_events.c.fanned_out.is_(False))
            .order_by(_events.c.created_at)
            .limit(limit)
        )
        if self._postgres:
            pick = pick.with_for_update(skip_locked=True)
        events = (
            await self._conn.execute(
                update(WebhookEvent)
                .where(WebhookEvent.id.in_(pick.scalar_subquery()))
                .values(fanned_out=True)
                .returning(WebhookEvent.id, WebhookEvent.event_type, WebhookEvent.account_id)
            )
        ).all()
        if not events:
            return 0
        endpoints = await self.list_endpoints()
        rows = [
            {
                "event_id": event.id,
                "endpoint_id": endpoint.id,
                "state": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for event in events
            for endpoint in endpoints
            if endpoint.wants(event.event_type, event.account_id)
        ]
        if rows:
            await self.insert_deliveries(rows)
        return len(events)

    async def insert_deliveries(self, rows: list[dict[str, Any]]) -> None:
        dialect_insert = pg_insert if self._postgres else sqlite_insert
        await self._conn.execute(
            dialect_insert(WebhookDelivery)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["event_id", "endpoint_id"])
        )

    async def mark_fanned_out(self, event_id: str) -> None:
        await self._conn.execute(
            update(WebhookEvent).where(WebhookEvent.id == event_id).values(fanned_out=True)
        )

    async def insert_delivery(self, *, event_id: str, endpoint_id: str, now: datetime) -> int:
        result = await self._conn.execute(
            insert(WebhookDelivery)
            .values(
                event_id=event_id,
                endpoint_id=endpoint_id,
                state="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
            .returning(WebhookDelivery.id)
        )
        return int(result.scalar_one())

    async def claim(
        self,
        *,
        owner: str,
        now: datetime,
        lease_s: float,
        limit: int,
        only_id: int | None = None,
    ) -> list[ClaimedAttempt]:
        """Lease up to `limit` due deliveries (or just `only_id`, if it is claimable)."""
        due = (
            select(_deliveries.c.id)
            .where(
                _deliveries.c.state == "pending",
                _deliveries.c.next_attempt_at <= now,
                or_(_deliveries.c.lease_until.is_(None), _deliveries.c.lease_until <= now),
            )
            .order_by(_deliveries.c.next_attempt_at)
            .limit(limit)
        )
        if only_id is not None:
            due = due.where(_deliveries.c.id == only_id)
        if self._postgres:
            due = due.with_for_update(skip_locked=True)
        claimed = (
            await self._conn.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id.in_(due.scalar_subquery()))
                .values(
                    lease_owner=owner,
                    lease_until=now + timedelta(seconds=lease_s),
                    attempts=WebhookDelivery.attempts + 1,
                    last_attempt_at=now,
                )
                .returning(WebhookDelivery.id, WebhookDelivery.attempts)
            )
        ).all()
        if not claimed:
            return []
        attempts = {int(row.id): int(row.attempts) for row in claimed}
        rows = await self._conn.execute(
            select(
                _deliveries.c.id,
                _events.c.id.label("event_id"),
                _events.c.event_type,
                _events.c.created_at,
                _events.c.data,
                _endpoints.c.id.label("endpoint_id"),
                _endpoints.c.url,
                _endpoints.c.secret,
            )
            .select_from(
                _deliveries.join(_events, _events.c.id == _deliveries.c.event_id).join(
                    _endpoints, _endpoints.c.id == _deliveries.c.endpoint_id
                )
            )
            .where(_deliveries.c.id.in_(list(attempts)))
        )
        return [
            ClaimedAttempt(
                delivery_id=int(row.id),
                attempt=attempts[int(row.id)],
                event_id=row.event_id,
                event_type=row.event_type,
                event_created_at=as_utc(row.created_at),
                data=orjson.loads(row.data),
                endpoint_id=row.endpoint_id,
                url=row.url,
                secret=row.secret,
            )
            for row in rows
        ]

    async def finish_attempt(
        self,
        *,
        delivery_id: int,
        owner: str,
        attempt: int,
        state: str,
        next_attempt_at: datetime | None,
        status_code: int | None,
        error: str | None,
        now: datetime,
    ) -> bool:
        """Record an attempt's outcome if the lease is still ours; False if it was lost."""
        values: dict[str, Any] = {
            "state": state,
            "lease_owner": None,
            "lease_until": None,
            "last_status_code": status_code,
            "last_error": error,
        }
        if next_attempt_at is not None:
            values["next_attempt_at"] = next_attempt_at
        if state != "pending":
            values["finished_at"] = now
        result = await self._conn.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.lease_owner == owner,
                WebhookDelivery.attempts == attempt,
                WebhookDelivery.state == "pending",
            )
            .values(**values)
            .returning(WebhookDelivery.id)
        )
        return result.first() is not None

    async def deliveries_page(
        self,
        *,
        endpoint_id: str | None,
        state: str | None,
        limit: int,
        before_id: int | None,
    ) -> list[DeliveryRecord]:
        """Newest first."""
        statement = select(*_DELIVERY_COLUMNS).select_from(
            _deliveries.join(_events, _events.c.id == _deliveries.c.event_id)
        )
        conditions = []
        if endpoint_id is not None:
            conditions.append(_deliveries.c.endpoint_id == endpoint_id)
        if state is not None:
            conditions.append(_deliveries.c.state == state)
        if before_id is not None:
            conditions.append(_deliveries.c.id < before_id)
        if conditions:
            statement = statement.where(and_(*conditions))
        rows = await self._conn.execute(statement.order_by(_deliveries.c.id.desc()).limit(limit))
        return [DeliveryRecord.from_row(row) for row in rows]

    async def get_delivery(self, delivery_id: int) -> DeliveryRecord | None:
        row = (
            await self._conn.execute(
                select(*_DELIVERY_COLUMNS)
                .select_from(_deliveries.join(_events, _events.c.id == _deliveries.c.event_id))
                .where(_deliveries.c.id == delivery_id)
            )
        ).first()
        return DeliveryRecord.from_row(row) if row else None
