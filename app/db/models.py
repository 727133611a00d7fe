"""The database schema (SQLAlchemy 2 declarative). Alembic migrations in `migrations/` create it.

Money columns are BIGINT micro-dollars (`*_micros`); see `app.money`.

- `accounts`: one prepaid USD balance shared by the account's keys.
- `api_keys`: only the SHA-256 of the secret is stored (`key_hash`), plus a display prefix.
- `ledger_entries`: append-only; every balance movement with the balance after it.
  `balance == sum(amount)` over an account's rows, always.
- `request_log`: one row per API request. A billable request's row is inserted `pending`
  together with its charge and moved to `settled` afterwards; the sweeper refunds rows that
  stay `pending` past the hold timeout (their process died).
- `idempotency_records`: stored responses for `Idempotency-Key` replays (24 h); an
  `in_progress` row belongs to the request holding its `owner` token until `lease_expires_at`.
- `key_budgets`: a key's spend limits, one row per period (`day`, `month`, `total`).
- `key_spend`: what a budgeted key has spent per budget window (`day:2026-12-02`,
  `month:2026-12`, `total`); moved by the hold and the refund in the same unit of work as the
  balance (`app.ledger.budgets`), so a counter is exact the way the balance is.
- `webhook_endpoints`: operators' HTTPS receivers, the event types each wants, its signing
  secret (`whsec_...`, needed in clear to sign; shown once by the API).
- `webhook_events`: the durable outbox. Money statements insert a row in the same unit of work
  as the movement that caused it; `dedupe_key` (unique) makes "once per ..." events exact.
- `webhook_deliveries`: one row per (event, endpoint), claimed with a lease by whichever
  process sends the next attempt (`app.webhooks.repository`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# BIGINT on Postgres, INTEGER (the rowid alias, so it autoincrements) on SQLite
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"
    # the last line of defence: no statement can ever take a balance below zero
    __table_args__ = (CheckConstraint("balance_micros >= 0", name="ck_accounts_balance_nonneg"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    balance_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(20), default="active")
    #: IANA zone of the account's calendar (day/month budget windows)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC", server_default="UTC")
    #: `balance.below_threshold` fires when a debit takes the balance below this (None: off)
    low_balance_threshold_micros: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    #: the account's price list over the catalog's (`app.catalog.account_pricing`), JSON text
    pricing: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(20))
    models: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_concurrency: Mapped[int | None] = mapped_column(Integer, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class LedgerEntry(Base):
    __tablename__ = "ledger_entries"
    __table_args__ = (
        # a request is charged once and refunded at most once
        UniqueConstraint("request_id", "kind", name="uq_ledger_request_kind"),
        Index("ix_ledger_account_id_id", "account_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    key_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    kind: Mapped[str] = mapped_column(String(20))  # topup | adjustment | charge | refund
    amount_micros: Mapped[int] = mapped_column(BigInteger)
    balance_after_micros: Mapped[int] = mapped_column(BigInteger)
    model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class RequestLog(Base):
    __tablename__ = "request_log"
    __table_args__ = (
        Index("ix_request_log_account_created", "account_id", "created_at"),
        Index("ix_request_log_state_created", "state", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_request_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    account_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    key_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    endpoint: Mapped[str] = mapped_column(String(40), default="generations")
    state: Mapped[str] = mapped_column(String(20))  # pending | settled | swept | unbilled
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    images: Mapped[int] = mapped_column(Integer, default=0)
    held_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    user: Mapped[str | None] = mapped_column(String(200), nullable=True)
    #: the key_spend windows this request's hold counted against, comma-separated (refunds
    #: give the budget back to exactly these); None: the key had no budget
    budget_windows: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: the provider attempts in order, e.g. "openai:UPSTREAM_ERROR>fal:ok" (the last `ok` is
    #: the provider that answered); None for requests that never reached a provider
    route: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class KeyBudget(Base):
    __tablename__ = "key_budgets"

    key_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    period: Mapped[str] = mapped_column(String(10), primary_key=True)  # day | month | total
    amount_micros: Mapped[int] = mapped_column(BigInteger)


class KeySpend(Base):
    __tablename__ = "key_spend"
    __table_args__ = (CheckConstraint("spent_micros >= 0", name="ck_key_spend_nonneg"),)

    key_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    #: "day:YYYY-MM-DD" / "month:YYYY-MM" in the account's time zone, or "total"
    window: Mapped[str] = mapped_column(String(20), primary_key=True)
    #: the budget amount in force at the last hold (the check compares against it)
    limit_micros: Mapped[int] = mapped_column(BigInteger)
    spent_micros: Mapped[int] = mapped_column(BigInteger, default=0)


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_records"

    # scope: "gen:<account_id>" for the public API, "admin:credits:<account_id>" for admin
    scope: Mapped[str] = mapped_column(String(100), primary_key=True)
    idem_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(20))  # in_progress | done
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    #: the fencing token of the request that claimed the key: only it may complete or abandon
    owner: Mapped[str | None] = mapped_column(String(32), nullable=True)
    #: an `in_progress` row whose lease ran out belongs to a dead request and may be taken over
    lease_expires_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    #: the request that ran under the key (its request_log id), for the console's request page
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    #: how many repeats were answered from the stored response
    replays: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_replayed_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(String(500), nullable=True)
    #: the event types this endpoint receives
    event_types: Mapped[list[str]] = mapped_column(JSON)
    #: None: events of every account; else only this account's (provider events always)
    account_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    secret: Mapped[str] = mapped_column(String(100))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class WebhookEvent(Base):
    __tablename__ = "webhook_events"
    __table_args__ = (Index("ix_webhook_events_fanned_out_created", "fanned_out", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # msg_..., the webhook-id
    event_type: Mapped[str] = mapped_column(String(60))
    account_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    #: JSON object: the event's `data` (amounts in micro-dollars; rendered as USD when sent)
    data: Mapped[str] = mapped_column(Text)
    dedupe_key: Mapped[str | None] = mapped_column(String(300), nullable=True, unique=True)
    #: deliveries were created for the endpoints subscribed at that time
    fanned_out: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "endpoint_id", name="uq_webhook_delivery_event_endpoint"),
        Index("ix_webhook_deliveries_state_next", "state", "next_attempt_at"),
        Index("ix_webhook_deliveries_endpoint_id", "endpoint_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(40))
    endpoint_id: Mapped[str] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(20))  # pending | succeeded | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    #: who is sending the current attempt, and until when (a dead sender's lease runs out)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
