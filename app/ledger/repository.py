"""All ledger SQL, behind intent-named methods (`debit_if_covered`, `finish_if_pending`, ...).

A repository works on the connection it is given and never begins or commits: the `Ledger`
service decides the unit of work (an AUTOCOMMIT connection on Postgres, where every money
method is one statement; one short write transaction on SQLite).

Postgres runs the single-statement CTEs of `app.ledger.postgres_sql`. SQLite has no
data-modifying CTEs, so the same steps run as a few statements in one transaction whose FIRST
statement is the conditional UPDATE: SQLite takes the database write lock right there (there is
no earlier read that would have to be upgraded, which is what makes SQLite fail with BUSY
instead of waiting), so writers queue on `busy_timeout` and the check-and-debit is atomic
(SQLite serializes writers; the UPDATE's WHERE is evaluated under the write lock).

Clocks: on Postgres every timestamp comes from the database (`now()`), so processes with
skewed clocks agree on hold ages. On SQLite (one host) timestamps are written by Python as
naive UTC text with microseconds, the form SQLAlchemy stores and compares.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Row, case, exists, func, insert, or_, select, true, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db.models import Account, ApiKey, KeyBudget, KeySpend, LedgerEntry, RequestLog
from app.ledger import postgres_sql
from app.ledger.records import AccountRecord, LedgerRow, utc_now
from app.money import MAX_AMOUNT_MICROS
from app.webhooks.outbox import OutboxRepository

_LEDGER_COLUMNS = (
    LedgerEntry.id,
    LedgerEntry.account_id,
    LedgerEntry.key_id,
    LedgerEntry.request_id,
    LedgerEntry.kind,
    LedgerEntry.amount_micros,
    LedgerEntry.balance_after_micros,
    LedgerEntry.model,
    LedgerEntry.note,
    LedgerEntry.created_at,
)
_ACCOUNT_COLUMNS = (
    Account.id,
    Account.name,
    Account.balance_micros,
    Account.status,
    Account.timezone,
    Account.low_balance_threshold_micros,
    Account.pricing,
    Account.created_at,
    Account.updated_at,
)


@dataclass(frozen=True, slots=True)
class FinishedRequest:
    """A request this statement moved out of `pending` (and what it gave back)."""

    held_micros: int
    cost_micros: int
    refund_micros: int
    balance_after_micros: int | None
    #: the request's model (for the per-model metrics)
    model: str | None = None


@dataclass(frozen=True, slots=True)
class HoldRequest:
    """Everything a hold writes: the charge and the request's `pending` log row."""

    request_id: str
    account_id: str
    key_id: str
    model: str
    amount_micros: int
    endpoint: str = "generations"
    user: str | None = None
    client_request_id: str | None = None
    #: the SHA-256 the caller authenticated with: a rotated secret is refused here at once,
    #: on every process, whatever a key cache still holds
    key_hash: str | None = None
    #: False: the fast path, refused when the key has budgets. True: the caller already
    #: counted the hold against `budget_windows` in this unit of work (`app.ledger.budgets`)
    budgeted: bool = False
    budget_windows: str | None = None


@dataclass(frozen=True, slots=True)
class Finish:
    """One request's end: its settle (`new_state` 'settled') or its sweep ('swept').

    `finish_if_pending` keeps `min(cost_micros, held)` and refunds the rest of the hold,
    once; `note` goes on the refund's ledger row, `route` into the request log.
    """

    request_id: str
    cost_micros: int
    images: int
    status_code: int | None
    error_code: str | None
    latency_ms: int | None
    note: str
    route: str | None = None
    new_state: str = "settled"


@dataclass(frozen=True, slots=True)
class HoldFacts:
    """What a refused hold saw, read after the fact to explain the refusal."""

    key_exists: bool
    key_account_id: str | None
    key_hash: str | None
    key_revoked: bool
    key_expired: bool  # by the database clock on Postgres, like the hold itself
    account_status: str | None  # None: no such account
    balance_micros: int
    has_budgets: bool = False


class LedgerRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection
        self._postgres = connection.dialect.name == "postgresql"

    @property
    def connection(self) -> AsyncConnection:
        return self._conn

    def _now(self) -> Any:
        """The write timestamp: the database clock on Postgres, Python's UTC clock on SQLite."""
        return func.now() if self._postgres else utc_now()

    # accounts --------------------------------------------------------------------------
    async def insert_account(self, *, account_id: str, name: str, balance_micros: int) -> None:
        now = self._now()
        await self._conn.execute(
            insert(Account).values(
                id=account_id,
                name=name,
                balance_micros=balance_micros,
                status="active",
                created_at=now,
                updated_at=now,
            )
        )

    async def get_account(self, account_id: str) -> AccountRecord | None:
        row = (
            await self._conn.execute(select(*_ACCOUNT_COLUMNS).where(Account.id == account_id))
        ).first()
        return AccountRecord.from_row(row) if row else None

    async def update_account(self, account_id: str, values: dict[str, Any]) -> bool:
        result = await self._conn.execute(
            update(Account)
            .where(Account.id == account_id)
            .values(**values, updated_at=self._now())
            .returning(Account.id)
        )
        return result.first() is not None

    # ledger ----------------------------------------------------------------------------
    async def append_entry(
        self,
        *,
        account_id: str,
        kind: str,
        amount_micros: int,
        balance_after_micros: int,
        key_id: str | None = None,
        request_id: str | None = None,
        model: str | None = None,
        note: str | None = None,
    ) -> LedgerRow:
        """Insert one ledger row; the caller has just moved the balance in this transaction."""
        result = await self._conn.execute(
            insert(LedgerEntry)
            .values(
                account_id=account_id,
                key_id=key_id,
                request_id=request_id,
                kind=kind,
                amount_micros=amount_micros,
                balance_after_micros=balance_after_micros,
                model=model,
                note=note,
                created_at=self._now(),
            )
            .returning(*_LEDGER_COLUMNS)
        )
        return LedgerRow.from_row(result.one())

    async def credit_if_stays_nonnegative(
        self,
        *,
        account_id: str,
        amount_micros: int,
        kind: str,
        note: str | None,
        request_id: str | None,
    ) -> LedgerRow | None:
        """Move the balance by a signed amount and log it, unless it would end below zero or
        above MAX_AMOUNT_MICROS (written as a subtraction: the sum itself could overflow)."""
        params = {
            "account_id": account_id,
            "amount": amount_micros,
            "max_balance": MAX_AMOUNT_MICROS,
            "kind": kind,
            "note": note,
            "request_id": request_id,
        }
        if self._postgres:
            row = (await self._conn.execute(postgres_sql.CREDIT, params)).first()
            return LedgerRow.from_row(row) if row else None
        balance = await self._move_balance(
            account_id,
            amount_micros,
            Account.balance_micros + amount_micros >= 0,
            Account.balance_micros <= MAX_AMOUNT_MICROS - amount_micros,
        )
        if balance is None:
            return None
        if amount_micros < 0:
            await OutboxRepository(self._conn).alert_if_crossed_below(
                account_id=account_id,
                balance_after_micros=balance,
                debited_micros=-amount_micros,
                now=utc_now(),
            )
        return await self.append_entry(
            account_id=account_id,
            kind=kind,
            amount_micros=amount_micros,
            balance_after_micros=balance,
            note=note,
            request_id=request_id,
        )

    async def debit_if_covered(self, hold: HoldRequest) -> int | None:
        """The hold: debit + charge row + pending request_log row, or nothing (None).

        Only if the key is usable, the account active and the balance covers the amount.
        """
        if self._postgres:
            row = (await self._conn.execute(postgres_sql.HOLD, hold_params(hold))).first()
            return int(row.balance_micros) if row else None
        now = utc_now()
        usable_key = exists().where(
            ApiKey.id == hold.key_id,
            ApiKey.account_id == hold.account_id,
            ApiKey.revoked_at.is_(None),
            or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now),
            true() if hold.key_hash is None else ApiKey.key_hash == hold.key_hash,
            true() if hold.budgeted else ~exists().where(KeyBudget.key_id == hold.key_id),
        )
        balance = await self._move_balance(
            hold.account_id,
            -hold.amount_micros,
            Account.status == "active",
            Account.balance_micros >= hold.amount_micros,
            usable_key,
        )
        if balance is None:
            return None
        if hold.amount_micros > 0:
            await OutboxRepository(self._conn).alert_if_crossed_below(
                account_id=hold.account_id,
                balance_after_micros=balance,
                debited_micros=hold.amount_micros,
                now=now,
            )
            await self.append_entry(
                account_id=hold.account_id,
                kind="charge",
                amount_micros=-hold.amount_micros,
                balance_after_micros=balance,
                key_id=hold.key_id,
                request_id=hold.request_id,
                model=hold.model,
            )
        await self._conn.execute(
            insert(RequestLog).values(
                id=hold.request_id,
                client_request_id=hold.client_request_id,
                account_id=hold.account_id,
                key_id=hold.key_id,
                model=hold.model,
                endpoint=hold.endpoint,
                state="pending",
                images=0,
                held_micros=hold.amount_micros,
                cost_micros=0,
                user=hold.user,
                budget_windows=hold.budget_windows,
                created_at=now,
            )
        )
        return balance

    async def debit_batch_if_covered(
        self, account_id: str, holds: Sequence[HoldRequest]
    ) -> dict[str, int]:
        """Postgres: many fast-path holds on one account in one statement (`HOLD_BATCH`).

        Debits every item whose key is usable, or none of them if the balance does not cover
        them all; the balance after each item held, by request id (the others: not held).
        """
        result = await self._conn.execute(
            postgres_sql.HOLD_BATCH, hold_batch_params(account_id, holds)
        )
        return {row.request_id: int(row.balance_after) for row in result}

    async def hold_facts(
        self, *, account_id: str, key_id: str, lock_account: bool = False
    ) -> HoldFacts:
        """Why a hold would be refused. `lock_account`: SELECT ... FOR UPDATE (Postgres)."""
        account_query = select(Account.status, Account.balance_micros).where(
            Account.id == account_id
        )
        if lock_account:
            account_query = account_query.with_for_update()
        key = (
            await self._conn.execute(
                select(
                    ApiKey.account_id,
                    ApiKey.key_hash,
                    ApiKey.revoked_at,
                    (ApiKey.expires_at <= self._now()).label("expired"),
                ).where(ApiKey.id == key_id)
            )
        ).first()
        account = (await self._conn.execute(account_query)).first()
        has_budgets = (
            await self._conn.execute(select(exists().where(KeyBudget.key_id == key_id)))
        ).scalar_one()
        return HoldFacts(
            has_budgets=bool(has_budgets),
            key_exists=key is not None,
            key_account_id=key.account_id if key else None,
            key_hash=key.key_hash if key else None,
            key_revoked=bool(key and key.revoked_at is not None),
            key_expired=bool(key and key.expired),
            account_status=account.status if account else None,
            balance_micros=int(account.balance_micros) if account else 0,
        )

    async def finish_if_pending(self, finish: Finish) -> FinishedRequest | None:
        """pending -> settled/swept, once; refunds `held - min(cost, held)`. None: not pending."""
        if self._postgres:
            row = (await self._conn.execute(postgres_sql.FINISH, finish_params(finish))).first()
            return None if row is None else finished_request(row._mapping)
        request_id, cost_micros = finish.request_id, finish.cost_micros
        clamped = case(
            (RequestLog.held_micros < cost_micros, RequestLog.held_micros), else_=cost_micros
        )
        finished = (
            await self._conn.execute(
                update(RequestLog)
                .where(RequestLog.id == request_id, RequestLog.state == "pending")
                .values(
                    state=finish.new_state,
                    cost_micros=clamped,
                    images=finish.images,
                    status_code=finish.status_code,
                    error_code=finish.error_code,
                    latency_ms=finish.latency_ms,
                    route=finish.route,
                    finished_at=utc_now(),
                )
                .returning(
                    RequestLog.account_id,
                    RequestLog.key_id,
                    RequestLog.model,
                    RequestLog.held_micros,
                    RequestLog.cost_micros,
                    RequestLog.budget_windows,
                )
            )
        ).first()
        if finished is None:
            return None
        refund = int(finished.held_micros) - int(finished.cost_micros)
        balance: int | None = None
        if refund > 0 and finished.budget_windows:
            await self._conn.execute(
                update(KeySpend)
                .where(
                    KeySpend.key_id == finished.key_id,
                    KeySpend.window.in_(finished.budget_windows.split(",")),
                )
                .values(spent_micros=KeySpend.spent_micros - refund)
            )
        if refund > 0:
            balance = await self._move_balance(finished.account_id, refund)
            assert balance is not None, "a pending request's account cannot vanish"
            await self.append_entry(
                account_id=finished.account_id,
                kind="refund",
                amount_micros=refund,
                balance_after_micros=balance,
                key_id=finished.key_id,
                request_id=request_id,
                model=finished.model,
                note=finish.note,
            )
        return FinishedRequest(
            held_micros=int(finished.held_micros),
            cost_micros=int(finished.cost_micros),
            refund_micros=max(refund, 0),
            balance_after_micros=balance,
            model=finished.model,
        )

    async def settle_batch_keeping_holds(
        self, settles: Sequence[Finish]
    ) -> dict[str, FinishedRequest]:
        """Postgres: pending -> settled for every request whose cost covers its hold (nothing
        to refund), in one statement; the others are left as they are (not returned)."""
        result = await self._conn.execute(postgres_sql.SETTLE_BATCH, settle_batch_params(settles))
        return settled_keeping_holds(row._mapping for row in result)

    async def request_state(self, request_id: str) -> str | None:
        result = await self._conn.execute(
            select(RequestLog.state).where(RequestLog.id == request_id)
        )
        return result.scalar_one_or_none()

    async def insert_unbilled(self, values: dict[str, Any]) -> bool:
        """Log a request refused before any hold; False if the request id is already logged."""
        dialect_insert = pg_insert if self._postgres else sqlite_insert
        now = self._now()
        statement = (
            dialect_insert(RequestLog)
            .values(
                **values,
                state="unbilled",
                images=0,
                held_micros=0,
                cost_micros=0,
                created_at=now,
                finished_at=now,
            )
            .on_conflict_do_nothing(index_elements=[RequestLog.id])
            .returning(RequestLog.id)
        )
        return (await self._conn.execute(statement)).first() is not None

    async def stale_pending_ids(self, *, older_than_s: float, limit: int) -> list[str]:
        if self._postgres:
            params = {"older_than_s": older_than_s, "limit": limit}
            result = await self._conn.execute(postgres_sql.STALE_PENDING, params)
        else:
            cutoff = utc_now() - timedelta(seconds=older_than_s)
            result = await self._conn.execute(
                select(RequestLog.id)
                .where(RequestLog.state == "pending", RequestLog.created_at < cutoff)
                .order_by(RequestLog.created_at)
                .limit(limit)
            )
        return list(result.scalars())

    async def entries_page(
        self, account_id: str, *, limit: int, before_id: int | None
    ) -> list[LedgerRow]:
        """Newest first; `before_id` is the id of the last row of the previous page."""
        statement = select(*_LEDGER_COLUMNS).where(LedgerEntry.account_id == account_id)
        if before_id is not None:
            statement = statement.where(LedgerEntry.id < before_id)
        result = await self._conn.execute(statement.order_by(LedgerEntry.id.desc()).limit(limit))
        return [LedgerRow.from_row(row) for row in result]

    async def balance_and_ledger_sum(self, account_id: str) -> tuple[int, int] | None:
        ledger_sum = (
            select(func.coalesce(func.sum(LedgerEntry.amount_micros), 0))
            .where(LedgerEntry.account_id == account_id)
            .scalar_subquery()
        )
        row = (
            await self._conn.execute(
                select(Account.balance_micros, ledger_sum).where(Account.id == account_id)
            )
        ).first()
        return (int(row[0]), int(row[1])) if row else None

    # -----------------------------------------------------------------------------------
    async def _move_balance(self, account_id: str, delta: int, *conditions: Any) -> int | None:
        """SQLite: the conditional UPDATE that opens every money transaction (takes the lock)."""
        result = await self._conn.execute(
            update(Account)
            .where(Account.id == account_id, *conditions)
            .values(balance_micros=Account.balance_micros + delta)
            .returning(Account.balance_micros)
        )
        row: Row[Any] | None = result.first()
        return int(row[0]) if row else None


# the Postgres money statements' parameters and rows (here, and raw in `app.ledger.hot`) -----
def hold_params(hold: HoldRequest) -> dict[str, Any]:
    return {
        "request_id": hold.request_id,
        "account_id": hold.account_id,
        "key_id": hold.key_id,
        "model": hold.model,
        "amount": hold.amount_micros,
        "endpoint": hold.endpoint,
        "user": hold.user,
        "client_request_id": hold.client_request_id,
        "key_hash": hold.key_hash,
        "budgeted": hold.budgeted,
        "budget_windows": hold.budget_windows,
    }


def hold_batch_params(account_id: str, holds: Sequence[HoldRequest]) -> dict[str, Any]:
    return {
        "account_id": account_id,
        "request_ids": [hold.request_id for hold in holds],
        "key_ids": [hold.key_id for hold in holds],
        "key_hashes": [hold.key_hash for hold in holds],
        "amounts": [hold.amount_micros for hold in holds],
        "models": [hold.model for hold in holds],
        "endpoints": [hold.endpoint for hold in holds],
        "users": [hold.user for hold in holds],
        "client_request_ids": [hold.client_request_id for hold in holds],
    }


def finish_params(finish: Finish) -> dict[str, Any]:
    return {
        "request_id": finish.request_id,
        "new_state": finish.new_state,
        "cost": finish.cost_micros,
        "images": finish.images,
        "status_code": finish.status_code,
        "error_code": finish.error_code,
        "latency_ms": finish.latency_ms,
        "note": finish.note,
        "route": finish.route,
    }


def finished_request(row: Any) -> FinishedRequest:
    """FINISH's row (a SQLAlchemy `Row` or an asyncpg `Record`)."""
    return FinishedRequest(
        held_micros=int(row["held_micros"]),
        cost_micros=int(row["cost_micros"]),
        refund_micros=int(row["refund"] or 0),
        balance_after_micros=None if row["balance_after"] is None else int(row["balance_after"]),
        model=row["model"],
    )


def settle_batch_params(settles: Sequence[Finish]) -> dict[str, Any]:
    return {
        "request_ids": [s.request_id for s in settles],
        "costs": [s.cost_micros for s in settles],
        "images": [s.images for s in settles],
        "status_codes": [s.status_code for s in settles],
        "error_codes": [s.error_code for s in settles],
        "latencies": [s.latency_ms for s in settles],
        "routes": [s.route for s in settles],
    }


def settled_keeping_holds(rows: Iterable[Any]) -> dict[str, FinishedRequest]:
    """SETTLE_BATCH's rows (SQLAlchemy `Row`s or asyncpg `Record`s)."""
    return {
        row["id"]: FinishedRequest(
            held_micros=int(row["held_micros"]),
            cost_micros=int(row["held_micros"]),
            refund_micros=0,
            balance_after_micros=None,
            model=row["model"],
        )
        for row in rows
    }
