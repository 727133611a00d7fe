"""Read-only SQL behind the admin listings: accounts, usage totals and the request log.

Nothing here writes. Money moves only through `app.ledger`; keys change only through
`app.keys`. Timestamps are compared as typed values: every writer binds UTC timestamps with
microseconds (SQLite) or uses the database clock (Postgres), so `(created_at, id)` keyset
cursors and the `from`/`to` filters mean the same on both backends.

Usage semantics: `requests` counts every logged request (billed or not), `images` and `cost`
count only settled requests (what was delivered and stays charged). A pending request's hold is
not revenue yet and a swept one was refunded in full.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar, cast

from sqlalchemy import ColumnElement, Table, and_, case, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.db.models import Account, IdempotencyRecord, LedgerEntry, RequestLog
from app.errors import InvalidParameter
from app.keys.cursor import decode_cursor, encode_cursor
from app.ledger.records import AccountRecord, LedgerRow, as_utc

GroupBy = Literal["model", "key", "account", "day"]
Bucket = Literal["hour", "day"]
_R = TypeVar("_R")

_accounts = cast(Table, Account.__table__)
_log = cast(Table, RequestLog.__table__)
_entries = cast(Table, LedgerEntry.__table__)
_idempotency = cast(Table, IdempotencyRecord.__table__)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    id: str
    client_request_id: str | None
    account_id: str | None
    key_id: str | None
    model: str | None
    endpoint: str
    state: str
    status_code: int | None
    error_code: str | None
    images: int
    held_micros: int
    cost_micros: int
    latency_ms: int | None
    user: str | None
    created_at: datetime
    finished_at: datetime | None
    #: the provider attempts ("openai:UPSTREAM_ERROR>fal:ok"); None: no provider was called
    route: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> RequestRecord:
        return cls(
            id=row.id,
            client_request_id=row.client_request_id,
            account_id=row.account_id,
            key_id=row.key_id,
            model=row.model,
            endpoint=row.endpoint,
            state=row.state,
            status_code=row.status_code,
            error_code=row.error_code,
            images=int(row.images),
            held_micros=int(row.held_micros),
            cost_micros=int(row.cost_micros),
            latency_ms=row.latency_ms,
            user=row.user,
            created_at=as_utc(row.created_at),
            finished_at=None if row.finished_at is None else as_utc(row.finished_at),
            route=row.route,
        )


@dataclass(frozen=True, slots=True)
class UsageRow:
    #: the model id, key id or day ("YYYY-MM-DD", UTC); None for the ungrouped total
    group: str | None
    requests: int
    images: int
    cost_micros: int


@dataclass(frozen=True, slots=True)
class TimelineRow:
    #: the bucket's start, UTC: "YYYY-MM-DDTHH" (hour) or "YYYY-MM-DD" (day)
    bucket: str
    requests: int
    #: requests answered with a 4xx or 5xx status
    errors: int
    images: int
    cost_micros: int


@dataclass(frozen=True, slots=True)
class IdempotencyUse:
    """The Idempotency-Key a request ran under, and the repeats answered from it."""

    key: str
    #: "in_progress" or "done" (a failed request's key is released, so it has no record)
    state: str
    status_code: int | None
    expires_at: datetime
    replays: int
    last_replayed_at: datetime | None


@dataclass(frozen=True, slots=True)
class RequestFilter:
    account_id: str | None = None
    key_id: str | None = None
    model: str | None = None
    status_code: int | None = None
    state: str | None = None
    error_code: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class Reports:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def list_accounts(
        self,
        *,
        limit: int,
        cursor: str | None,
        status: str | None = None,
        search: str | None = None,
    ) -> tuple[list[AccountRecord], str | None]:
        """Accounts in creation order; `search` matches the exact id or part of the name."""
        query = select(_accounts).order_by(_accounts.c.created_at, _accounts.c.id)
        if status is not None:
            query = query.where(_accounts.c.status == status)
        if search:
            query = query.where(
                or_(
                    _accounts.c.id == search,
                    func.lower(_accounts.c.name).contains(search.lower(), autoescape=True),
                )
            )
        if cursor is not None:
            created_at, account_id = _decode_time_cursor(cursor)
            query = query.where(
                or_(
                    _accounts.c.created_at > created_at,
                    and_(_accounts.c.created_at == created_at, _accounts.c.id > account_id),
                )
            )
        async with self._engine.connect() as conn:
            rows = list(await conn.execute(query.limit(limit + 1)))
        records = [AccountRecord.from_row(row) for row in rows]
        return _page(records, limit, lambda record: (record.created_at, record.id))

    async def list_requests(
        self, filters: RequestFilter, *, limit: int, cursor: str | None
    ) -> tuple[list[RequestRecord], str | None]:
        """The request log, newest first."""
        query = (
            select(_log)
            .where(*_conditions(filters))
            .order_by(_log.c.created_at.desc(), _log.c.id.desc())
        )
        if cursor is not None:
            created_at, request_id = _decode_time_cursor(cursor)
            query = query.where(
                or_(
                    _log.c.created_at < created_at,
                    and_(_log.c.created_at == created_at, _log.c.id < request_id),
                )
            )
        async with self._engine.connect() as conn:
            rows = list(await conn.execute(query.limit(limit + 1)))
        records = [RequestRecord.from_row(row) for row in rows]
        return _page(records, limit, lambda record: (record.created_at, record.id))

    async def get_request(self, request_id: str) -> RequestRecord | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(_log).where(_log.c.id == request_id))).first()
        return None if row is None else RequestRecord.from_row(row)

    async def ledger_for_request(self, request_id: str) -> list[LedgerRow]:
        """The ledger rows of one request (its charge, and its refund if any), oldest first."""
        query = select(_entries).where(_entries.c.request_id == request_id).order_by(_entries.c.id)
        async with self._engine.connect() as conn:
            rows = list(await conn.execute(query))
        return [LedgerRow.from_row(row) for row in rows]

    async def idempotency_for_request(self, request_id: str) -> IdempotencyUse | None:
        """The live Idempotency-Key record of a request, if it was sent with one."""
        query = select(_idempotency).where(_idempotency.c.request_id == request_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return IdempotencyUse(
            key=row.idem_key,
            state=row.state,
            status_code=row.status_code,
            expires_at=as_utc(row.expires_at),
            replays=int(row.replays),
            last_replayed_at=None if row.last_replayed_at is None else as_utc(row.last_replayed_at),
        )

    async def timeline(self, filters: RequestFilter, *, bucket: Bucket) -> list[TimelineRow]:
        """Per hour or day (UTC), oldest first: requests, errors, settled images and cost.

        Only buckets with requests appear; the caller fills the gaps it wants to draw."""
        settled = _log.c.state == "settled"
        failed = _log.c.status_code >= 400
        async with self._engine.connect() as conn:
            group = _time_bucket(conn, bucket)
            query = (
                select(
                    group.label("grp"),
                    func.count().label("requests"),
                    func.coalesce(func.sum(case((failed, 1), else_=0)), 0).label("errors"),
                    func.coalesce(func.sum(case((settled, _log.c.images), else_=0)), 0).label(
                        "images"
                    ),
                    func.coalesce(func.sum(case((settled, _log.c.cost_micros), else_=0)), 0).label(
                        "cost"
                    ),
                )
                .where(*_conditions(filters))
                .group_by(group)
                .order_by(group)
            )
            rows = list(await conn.execute(query))
        return [
            TimelineRow(
                bucket=str(row.grp),
                requests=int(row.requests),
                errors=int(row.errors),
                images=int(row.images),
                cost_micros=int(row.cost),
            )
            for row in rows
        ]

    async def usage(self, filters: RequestFilter, *, group_by: GroupBy | None) -> list[UsageRow]:
        """Requests, images and settled cost: one row per group, or one row in all."""
        settled = _log.c.state == "settled"
        images = func.coalesce(func.sum(case((settled, _log.c.images), else_=0)), 0)
        cost = func.coalesce(func.sum(case((settled, _log.c.cost_micros), else_=0)), 0)
        async with self._engine.connect() as conn:
            group = _group_column(conn, group_by)
            query = select(
                group.label("grp"),
                func.count().label("requests"),
                images.label("images"),
                cost.label("cost"),
            ).where(*_conditions(filters))
            if group_by is not None:
                query = query.group_by(group).order_by(group)
            rows = list(await conn.execute(query))
        usage = [
            UsageRow(
                group=None if row.grp is None else str(row.grp),
                requests=int(row.requests),
                images=int(row.images),
                cost_micros=int(row.cost),
            )
            for row in rows
        ]
        return usage


def usage_total(rows: list[UsageRow]) -> UsageRow:
    """The sum of a grouped report's rows (every request is in exactly one group)."""
    return UsageRow(
        group=None,
        requests=sum(row.requests for row in rows),
        images=sum(row.images for row in rows),
        cost_micros=sum(row.cost_micros for row in rows),
    )


#: the filters that match a request log column of the same name exactly
_EXACT_FILTERS = ("account_id", "key_id", "model", "status_code", "state", "error_code")


def _conditions(filters: RequestFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [
        _log.c[column] == value
        for column in _EXACT_FILTERS
        if (value := getattr(filters, column)) is not None
    ]
    if filters.since is not None:
        conditions.append(_log.c.created_at >= filters.since.astimezone(UTC))
    if filters.until is not None:
        conditions.append(_log.c.created_at < filters.until.astimezone(UTC))
    return conditions


def _group_column(conn: AsyncConnection, group_by: GroupBy | None) -> ColumnElement[Any]:
    if group_by == "model":
        return _log.c.model
    if group_by == "key":
        return _log.c.key_id
    if group_by == "account":
        return _log.c.account_id
    if group_by == "day":
        return _time_bucket(conn, "day")
    return literal(None)


def _time_bucket(conn: AsyncConnection, bucket: Bucket) -> ColumnElement[Any]:
    if conn.dialect.name == "postgresql":
        # the UTC calendar day or hour, whatever the session's time zone
        pattern = "YYYY-MM-DD" if bucket == "day" else 'YYYY-MM-DD"T"HH24'
        return func.to_char(func.timezone("UTC", _log.c.created_at), pattern)
    # SQLite stores naive UTC text: date() takes its first ten characters' day
    if bucket == "day":
        return func.date(_log.c.created_at)
    return func.strftime("%Y-%m-%dT%H", _log.c.created_at)


def _page(
    records: list[_R], limit: int, sort_key: Callable[[_R], tuple[datetime, str]]
) -> tuple[list[_R], str | None]:
    """Trim the one extra row fetched to learn whether another page exists."""
    if len(records) <= limit:
        return records, None
    created_at, row_id = sort_key(records[limit - 1])
    return records[:limit], encode_cursor(created_at.isoformat(), row_id)


def _decode_time_cursor(cursor: str) -> tuple[datetime, str]:
    created_at, row_id = decode_cursor(cursor, parts=2)
    try:
        return datetime.fromisoformat(created_at), row_id
    except ValueError as exc:
        raise InvalidParameter("Invalid pagination cursor.", param="cursor") from exc
