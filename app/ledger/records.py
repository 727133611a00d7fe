"""What the ledger hands back: frozen, typed snapshots of database rows.

Amounts are `int` micro-dollars (see `app.money`); datetimes are timezone-aware UTC on both
backends (SQLite stores them naive, `as_utc` re-attaches the zone on the way out).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

AccountStatus = Literal["active", "suspended"]
LedgerKind = Literal["topup", "adjustment", "charge", "refund"]
#: settled: this call moved the request from pending to settled.
#: already_settled / swept / unbilled: someone else finished it first; nothing was done.
#: not_found: no request_log row with that id; nothing was done.
SettleState = Literal["settled", "already_settled", "swept", "unbilled", "not_found"]


def as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class AccountRecord:
    id: str
    name: str
    balance_micros: int
    status: str
    created_at: datetime
    updated_at: datetime
    timezone: str = "UTC"
    low_balance_threshold_micros: int | None = None
    #: the account's price list as stored (JSON text, `app.catalog.account_pricing`)
    pricing: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> AccountRecord:
        threshold = getattr(row, "low_balance_threshold_micros", None)
        return cls(
            id=row.id,
            name=row.name,
            balance_micros=int(row.balance_micros),
            status=row.status,
            timezone=getattr(row, "timezone", None) or "UTC",
            low_balance_threshold_micros=None if threshold is None else int(threshold),
            pricing=getattr(row, "pricing", None),
            created_at=as_utc(row.created_at),
            updated_at=as_utc(row.updated_at),
        )


@dataclass(frozen=True, slots=True)
class LedgerRow:
    id: int
    account_id: str
    key_id: str | None
    request_id: str | None
    kind: str
    amount_micros: int
    balance_after_micros: int
    model: str | None
    note: str | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> LedgerRow:
        return cls(
            id=int(row.id),
            account_id=row.account_id,
            key_id=row.key_id,
            request_id=row.request_id,
            kind=row.kind,
            amount_micros=int(row.amount_micros),
            balance_after_micros=int(row.balance_after_micros),
            model=row.model,
            note=row.note,
            created_at=as_utc(row.created_at),
        )


@dataclass(frozen=True, slots=True)
class SettleOutcome:
    """What `Ledger.settle` (or the sweeper, per row) did to one request."""

    request_id: str
    state: SettleState
    held_micros: int = 0
    #: what stays charged (clamped to `held_micros`)
    cost_micros: int = 0
    refunded_micros: int = 0
    #: the balance right after the refund; None when nothing was refunded
    balance_after_micros: int | None = None

    @property
    def settled(self) -> bool:
        """True when this call was the one that finished the request."""
        return self.state == "settled"
