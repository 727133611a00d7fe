"""The prepaid-balance ledger: the money core of the gateway.

Invariants, on every backend, under any concurrency across any number of processes:

1. `accounts.balance_micros == sum(ledger_entries.amount_micros)` for every account, and per
   account the rows ordered by id chain exactly (`balance_after = previous + amount`).
2. A balance never goes below zero: every debit is a conditional UPDATE (`balance >= amount`)
   that is also its own check, and the schema's CHECK constraint backs it up.
3. A request is charged at most once and refunded at most once: its `request_log` row is created
   with the charge and leaves `pending` exactly once (settle or sweep, whoever flips the state
   first); UNIQUE(request_id, kind) on the ledger enforces the same thing a second time.
4. Nothing is lost: a hold whose process died stays `pending` and is refunded in full by any
   process's `Sweeper` after the hold timeout.

A hot account (holds waiting on each other in one process) is held in batches, and settles
that refund nothing are settled in batches: each batch is still ONE atomic statement, and
whatever a batch does not do is done alone by the single-statement path
(`app.ledger.batching`, docs/decisions.md "The hot account").

Every method here is one atomic unit of work and commits it itself: the hold must be durable
before the upstream call starts, and on Postgres every money movement is ONE statement on an
AUTOCOMMIT connection (one round trip, the account row locked only for that statement), see
`app.ledger.postgres_sql`. So, unlike the rest of the codebase, the ledger does not join a
caller's session: it is its own boundary. SQL lives in `app.ledger.repository`.

Decisions the spec leaves open:
- A hold of 0 is allowed: it checks key and account and logs the request `pending`, but writes
  no ledger row (nothing moved). Its settle refunds nothing.
- A hold refused because the key vanished (hard-deleted) or belongs to another account is a 401
  INVALID_API_KEY; revoked/expired keys and suspended accounts are 403; a short balance is 402.
- credit: positive amounts are `topup` (or `adjustment` if asked), negative amounts are
  `adjustment`; zero, a negative `topup`, or an amount that would end below zero are 400
  INVALID_PARAMETER with param "amount". Suspended accounts can still be credited.
- settle with cost > held is a caller bug: it is clamped to the hold (logged as an error);
  the customer is never charged more than the hold.
- Settle after the sweeper refunded the request does nothing (the request ends up free) and
  says so in its `SettleOutcome` (state "swept"); it is logged as a warning.
- A reused request id on `hold` is 409 DUPLICATE_REQUEST_ID and moves no money.
- Database connection failures surface as 503 SERVICE_UNAVAILABLE.
- Budgets (`app.ledger.budgets`): a key without budgets takes the one-statement fast path; a
  key with budgets is refused there (the statement checks) and held in one short transaction
  that adds to its window counters, then debits the balance; any refusal rolls all of it back.
  A refused budget is 402 BUDGET_EXCEEDED (checked before the balance: the budget is the
  narrower, the key-holder's own limit). A hold of 0 counts against nothing.
- `updated_at` tracks admin edits (name, status), not balance movements.
- Observability (`app.observability`): each successful hold, each settle (and its refund) and
  each swept hold is counted, settled images and cost by model; hold and settle are spans
  when tracing is on, and the current request's facts learn its model, cost and code here.
- settle runs shielded from cancellation (a client hanging up still gets its refund at once;
  `wait_idle()` at shutdown). hold is not shielded: a cancelled hold that did commit is an
  unsettled `pending` request, refunded by the sweeper; so the hold timeout must exceed the
  longest request (upstream timeouts included).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Literal, TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.faults import DatabaseUnavailable, is_outage
from app.db.pool import urgent_checkouts
from app.db.raw import raw_connection
from app.db.storable import storable_text
from app.errors import (
    Conflict,
    InternalError,
    InvalidParameter,
    ServiceUnavailable,
)
from app.keys.cursor import decode_id_cursor
from app.ledger.batching import ALONE, hold_lanes, settle_lanes
from app.ledger.budgets import (
    BudgetRefused,
    BudgetRepository,
    Clock,
    budget_exceeded,
    check_timezone,
    window_of,
)
from app.ledger.hot import HotStatements
from app.ledger.records import AccountRecord, LedgerRow, SettleOutcome, SettleState, utc_now
from app.ledger.refusals import account_not_found, hold_refusal, key_refusal, usd
from app.ledger.repository import (
    Finish,
    FinishedRequest,
    HoldRequest,
    LedgerRepository,
)
from app.money import MAX_AMOUNT_MICROS, MoneyError, check_amount, max_usd_text
from app.observability import metrics, tracing
from app.observability.facts import note_model, note_settled
from app.webhooks.events import EventDraft, budget_reached
from app.webhooks.outbox import OutboxRepository

logger = logging.getLogger(__name__)
T = TypeVar("T")

ACCOUNT_STATUSES = ("active", "suspended")
MAX_PAGE = 500
_SWEEP_BATCH = 200
_HOLD_ATTEMPTS = 3
_ANNOUNCED_MEMORY = 10_000
_STATE_AFTER_LOST_RACE: dict[str | None, SettleState] = {
    "settled": "already_settled",
    "swept": "swept",
    "unbilled": "unbilled",
    None: "not_found",
}


class Unset:
    """The default of optional edits that may also be set to None (cleared)."""


UNSET = Unset()


def new_account_id() -> str:
    return "acct_" + secrets.token_hex(12)


def _is_deadlock(exc: BaseException) -> bool:
    """Postgres chose this statement as a deadlock victim (40P01): it moved nothing; retry."""
    while exc is not None:
        if getattr(exc, "sqlstate", None) == "40P01" or getattr(exc, "pgcode", None) == "40P01":
            return True
        orig = getattr(exc, "orig", None)
        exc = orig if orig is not None and orig is not exc else exc.__cause__  # type: ignore[assignment]
    return False


@contextmanager
def _database_errors() -> Iterator[None]:
    """Outages on the engine are already `DatabaseUnavailable` (`app.db.faults`); this also
    covers what fails outside a statement (the pool's checkout timeout)."""
    try:
        yield
    except DatabaseUnavailable:
        raise
    except Exception as exc:
        if not is_outage(exc) or _is_deadlock(exc):
            raise
        metrics.DATABASE_ERRORS.inc()
        logger.error("ledger: database unavailable: %r", exc)
        raise DatabaseUnavailable() from exc


class Ledger:
    def __init__(self, engine: AsyncEngine, *, clock: Clock = utc_now) -> None:
        self._engine = engine
        #: the calendar of budget windows (UTC instant); injectable for tests
        self._clock = clock
        self._postgres = engine.dialect.name == "postgresql"
        self._in_flight: set[asyncio.Future[Any]] = set()
        #: (key, window) whose budget.reached is in the outbox (this process knows)
        self._announced: set[tuple[str, str]] = set()
        # AUTOCOMMIT: no BEGIN/COMMIT round trips; every money statement commits on its own
        self._autocommit = (
            engine.execution_options(isolation_level="AUTOCOMMIT") if self._postgres else engine
        )
        #: Postgres: per hot account, one hold statement in flight, the rest batched
        self._lanes = hold_lanes(self._debit_alone, self._debit_batch)
        #: Postgres: one settle statement in flight per process, the rest batched
        self._settles = settle_lanes(self._finish_alone, self._settle_batch)

    # units of work ---------------------------------------------------------------------
    @asynccontextmanager
    async def _atomic(self) -> AsyncIterator[LedgerRepository]:
        """Postgres: one autocommitted statement per call. SQLite: one write transaction."""
        with _database_errors():
            if self._postgres:
                async with self._autocommit.connect() as connection:
                    yield LedgerRepository(connection)
            else:
                async with self._engine.begin() as connection:
                    yield LedgerRepository(connection)

    @asynccontextmanager
    async def _hot(self) -> AsyncIterator[HotStatements]:
        """Postgres: one per-request money statement on the asyncpg connection itself, out
        of the same pool (`app.ledger.hot`, `app.db.raw`)."""
        with _database_errors():
            async with raw_connection(self._engine) as connection:
                yield HotStatements(connection)

    @asynccontextmanager
    async def _finishing(self) -> AsyncIterator[HotStatements | LedgerRepository]:
        if self._postgres:
            async with self._hot() as statements:
                yield statements
        else:
            async with self._atomic() as repo:
                yield repo

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[LedgerRepository]:
        """Several statements that must commit together (off the hot path)."""
        with _database_errors():
            async with self._engine.begin() as connection:
                yield LedgerRepository(connection)

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[LedgerRepository]:
        with _database_errors():
            async with self._autocommit.connect() as connection:
                yield LedgerRepository(connection)

    # accounts --------------------------------------------------------------------------
    async def create_account(
        self, *, name: str, balance_micros: int = 0, account_id: str | None = None
    ) -> AccountRecord:
        """A new active account; an initial balance is its first ledger row (`topup`)."""
        if balance_micros < 0:
            raise InvalidParameter("balance must not be negative", param="balance")
        _check_amount(balance_micros, "balance")
        storable_text(name, "name")
        account_id = account_id or new_account_id()
        try:
            async with self._transaction() as repo:
                await repo.insert_account(
                    account_id=account_id, name=name, balance_micros=balance_micros
                )
                if balance_micros > 0:
                    await repo.append_entry(
                        account_id=account_id,
                        kind="topup",
                        amount_micros=balance_micros,
                        balance_after_micros=balance_micros,
                        note="initial balance",
                    )
                account = await repo.get_account(account_id)
        except IntegrityError as exc:
            raise Conflict(f"account {account_id!r} already exists", code="ACCOUNT_EXISTS") from exc
        assert account is not None
        return account

    async def get_account(self, account_id: str) -> AccountRecord:
        async with self._read() as repo:
            account = await repo.get_account(account_id)
        if account is None:
            raise account_not_found(account_id)
        return account

    async def update_account(
        self,
        account_id: str,
        *,
        name: str | None = None,
        status: str | None = None,
        timezone: str | None = None,
        low_balance_threshold_micros: int | Unset | None = UNSET,
        pricing: str | Unset | None = UNSET,
    ) -> AccountRecord:
        """Admin edits. `low_balance_threshold_micros` / `pricing` (validated JSON text):
        None clears them, UNSET leaves them as they are."""
        values: dict[str, str | int | None] = {}
        if not isinstance(low_balance_threshold_micros, Unset):
            if low_balance_threshold_micros is not None and low_balance_threshold_micros <= 0:
                raise InvalidParameter(
                    "low_balance_threshold must be positive (null turns it off)",
                    param="low_balance_threshold",
                )
            values["low_balance_threshold_micros"] = low_balance_threshold_micros
        if not isinstance(pricing, Unset):
            values["pricing"] = pricing
        if name is not None:
            values["name"] = storable_text(name, "name")
        if timezone is not None:
            values["timezone"] = check_timezone(timezone)
        if status is not None:
            if status not in ACCOUNT_STATUSES:
                raise InvalidParameter(
                    f"status must be one of {', '.join(ACCOUNT_STATUSES)}", param="status"
                )
            values["status"] = status
        if values:
            async with self._atomic() as repo:
                found = await repo.update_account(account_id, values)
            if not found:
                raise account_not_found(account_id)
        return await self.get_account(account_id)

    # money -----------------------------------------------------------------------------
    async def credit(
        self,
        *,
        account_id: str,
        amount_micros: int,
        note: str | None,
        kind: Literal["topup", "adjustment"] | None = None,
        request_id: str | None = None,
    ) -> LedgerRow:
        """Admin top-up (> 0) or adjustment (signed; may not take the balance below zero)."""
        if amount_micros == 0:
            raise InvalidParameter("amount must not be zero", param="amount")
        _check_amount(amount_micros, "amount")
        if note is not None:
            storable_text(note, "note")
        kind = kind or ("topup" if amount_micros > 0 else "adjustment")
        if kind not in ("topup", "adjustment"):
            raise InvalidParameter("kind must be topup or adjustment", param="kind")
        if kind == "topup" and amount_micros < 0:
            raise InvalidParameter("a top-up must be positive", param="amount")
        async with self._atomic() as repo:
            row = await repo.credit_if_stays_nonnegative(
                account_id=account_id,
                amount_micros=amount_micros,
                kind=kind,
                note=note,
                request_id=request_id,
            )
        if row is not None:
            return row
        account = await self.get_account(account_id)  # NotFound when there is no account
        if account.balance_micros + amount_micros > MAX_AMOUNT_MICROS:
            raise InvalidParameter(
                f"amount would take the balance above the largest an account may hold, "
                f"${max_usd_text()} (balance ${usd(account.balance_micros)})",
                param="amount",
            )
        raise InvalidParameter(
            f"amount would take the balance below zero (balance ${usd(account.balance_micros)})",
            param="amount",
        )

    async def hold(
        self,
        *,
        request_id: str,
        account_id: str,
        key_id: str,
        model: str,
        amount_micros: int,
        endpoint: str = "generations",
        user: str | None = None,
        client_request_id: str | None = None,
        key_hash: str | None = None,
    ) -> int:
        """Take a request's price from the balance before the upstream call; the balance after.

        One atomic step (one statement on Postgres): the key must be usable, the account
        active and the balance must cover the amount; then the balance drops, a `charge` row
        is written and the request is logged `pending`. Otherwise nothing is written and the
        refusal is explained exactly (401 / 403 / 402), see `_explain_refused_hold`.
        """
        if amount_micros < 0:
            raise ValueError(f"hold amount must be >= 0, got {amount_micros}")
        request = HoldRequest(
            request_id=request_id,
            account_id=account_id,
            key_id=key_id,
            model=model,
            amount_micros=amount_micros,
            endpoint=endpoint,
            user=user,
            client_request_id=client_request_id,
            key_hash=key_hash,
        )
        note_model(model)
        attributes: tracing.Attributes = {
            "gateway.model": model,
            "gateway.amount_micros": amount_micros,
        }
        with tracing.span("ledger.hold", attributes):
            balance = await self._hold_announcing_refusals(request)
        metrics.record_hold()
        return balance

    async def _hold_announcing_refusals(self, hold: HoldRequest) -> int:
        try:
            return await self._hold(hold)
        except BudgetRefused as refusal:
            await self._announce_refusal(hold, refusal)
            raise

    async def _hold(self, hold: HoldRequest) -> int:
        request_id = hold.request_id
        try:
            if self._postgres:
                held = await self._lanes.run(hold)  # alone, or in a batch if the account is hot
                if held is ALONE:
                    held = await self._debit_alone(hold)
                if held is not None:
                    return held
                return await self._explain_refused_hold(hold)
            async with self._atomic() as repo:
                balance = await repo.debit_if_covered(hold)
                if balance is not None:
                    return balance
                # SQLite: the failed UPDATE already took the write lock, so this read sees
                # exactly the state the UPDATE judged
                facts = await repo.hold_facts(account_id=hold.account_id, key_id=hold.key_id)
                refusal = hold_refusal(facts, hold)
                if refusal is None and facts.has_budgets:
                    return await self._debit_budgeted(repo, hold)
                raise refusal or InternalError("hold refused")
        except IntegrityError as exc:
            raise Conflict(
                f"request id {request_id!r} was already used", code="DUPLICATE_REQUEST_ID"
            ) from exc

    async def _debit_alone(self, hold: HoldRequest) -> int | None:
        """Postgres: the single-hold statement (the balance after, or None: refused).

        Holds gate provider calls, so they take the head of a busy pool's queue
        (`urgent_checkouts`): at most one per account is in flight (`app.ledger.batching`)."""
        with urgent_checkouts():
            async with self._hot() as statements:
                return await statements.debit_if_covered(hold)

    async def _debit_batch(self, holds: Sequence[HoldRequest]) -> dict[str, int]:
        """Postgres: fast-path holds on one account in one statement (`app.ledger.batching`)."""
        with urgent_checkouts():
            async with self._hot() as statements:
                return await statements.debit_batch_if_covered(holds[0].account_id, holds)

    async def check_key(self, *, account_id: str, key_id: str, key_hash: str | None) -> None:
        """Raise what a hold would (401/403) if this key may not act for the account now.

        For paths that hand out what a key paid for without taking a hold (Idempotency-Key
        replays): a revoked, expired or rotated secret is refused there exactly as the hold
        refuses it, on every process, whatever a key cache still holds.
        """
        async with self._read() as repo:
            facts = await repo.hold_facts(account_id=account_id, key_id=key_id)
        refusal = key_refusal(facts, account_id=account_id, key_hash=key_hash)
        if refusal is not None:
            raise refusal

    def _budget_event(
        self, hold: HoldRequest, period: str, window: str, amount_micros: int, reason: str
    ) -> EventDraft:
        return budget_reached(
            account_id=hold.account_id,
            key_id=hold.key_id,
            period=period,
            window=window,
            amount_micros=amount_micros,
            reason=reason,
        )

    async def _announce_refusal(self, hold: HoldRequest, refusal: BudgetRefused) -> None:
        """`budget.reached` for a refused hold: its own small transaction, since the refusal
        rolled everything else back (once per key and window, by the event's dedupe key)."""
        seen = (hold.key_id, refusal.window)
        if seen in self._announced:  # a key over budget keeps retrying: one insert is enough
            return
        if len(self._announced) >= _ANNOUNCED_MEMORY:
            self._announced.clear()
        # claimed before the insert, so a burst of refusals makes one insert, not one each
        self._announced.add(seen)
        draft = self._budget_event(
            hold, refusal.period, refusal.window, refusal.amount_micros, "refused"
        )
        try:
            async with self._transaction() as repo:
                await OutboxRepository(repo.connection).insert_event(draft, now=self._clock())
        except Exception:  # the client's 402 matters more than the notification
            self._announced.discard(seen)  # the next refusal tries again
            logger.warning("ledger: could not record budget.reached for %s", hold, exc_info=True)

    async def _explain_refused_hold(self, hold: HoldRequest) -> int:
        """Postgres, off the happy path: re-judge a refused hold under the account row lock.

        A plain read of the latest committed state usually names the reason (a short balance,
        a revoked key). But the balance may have moved since the refused statement (a refund,
        a top-up), and then the read finds nothing wrong; only then lock the account row
        (SELECT ... FOR UPDATE) and decide on what cannot change under us: either raise the
        exact reason, or the hold now passes and is taken in the same transaction.
        """
        async with self._read() as repo:
            facts = await repo.hold_facts(account_id=hold.account_id, key_id=hold.key_id)
        refusal = hold_refusal(facts, hold)
        if refusal is not None:
            raise refusal  # true of the latest committed state: an honest reason
        if facts.has_budgets:
            return await self._hold_budgeted(hold)
        for _ in range(_HOLD_ATTEMPTS):
            async with self._transaction() as repo:
                facts = await repo.hold_facts(
                    account_id=hold.account_id, key_id=hold.key_id, lock_account=True
                )
                refusal = hold_refusal(facts, hold)
                if refusal is not None:
                    raise refusal
                if facts.has_budgets:
                    return await self._debit_budgeted(repo, hold)
                balance = await repo.debit_if_covered(hold)
                if balance is not None:
                    return balance
            # only a key revoked or expiring in between gets here; look again
        raise ServiceUnavailable("The account is changing too fast, please retry.", retry_after=1)

    async def _hold_budgeted(self, hold: HoldRequest) -> int:
        """Postgres: the budgeted hold in one transaction (a deadlock victim is retried)."""
        for attempt in range(_HOLD_ATTEMPTS):
            try:
                async with self._transaction() as repo:
                    return await self._debit_budgeted(repo, hold)
            except DBAPIError as exc:
                if not _is_deadlock(exc) or attempt == _HOLD_ATTEMPTS - 1:
                    raise
                logger.warning("ledger: budgeted hold %s was a deadlock victim; retrying", hold)
        raise AssertionError("unreachable")

    async def _debit_budgeted(self, repo: LedgerRepository, hold: HoldRequest) -> int:
        """Count the hold against every budget window, then debit; raise (roll back) if not.

        Runs inside the caller's unit of work: either every counter, the balance, the charge
        row and the pending request row are written, or (an exception) none of them.
        """
        budgets_repo = BudgetRepository(repo.connection)
        budgets, timezone = await budgets_repo.budgets_and_timezone(
            key_id=hold.key_id, account_id=hold.account_id
        )
        now = self._clock()
        windows = [(window_of(b.period, now, timezone), b.amount_micros) for b in budgets]
        if hold.amount_micros > 0 and windows:
            took = await budgets_repo.add_if_within(
                key_id=hold.key_id, amount_micros=hold.amount_micros, windows=windows
            )
            for budget, (window, _) in zip(budgets, windows, strict=True):
                if window not in took:
                    raise budget_exceeded(budget.period, budget.amount_micros, window)
            webhooks = OutboxRepository(repo.connection)
            for budget, (window, limit) in zip(budgets, windows, strict=True):
                if took[window] >= limit:  # used up exactly: announce it with this hold
                    await webhooks.insert_event(
                        self._budget_event(hold, budget.period, window, limit, "exhausted"),
                        now=now,
                    )
        counted = ",".join(window for window, _ in windows) if hold.amount_micros > 0 else ""
        balance = await repo.debit_if_covered(
            dataclasses.replace(hold, budgeted=True, budget_windows=counted or None)
        )
        if balance is None:
            facts = await repo.hold_facts(account_id=hold.account_id, key_id=hold.key_id)
            raise hold_refusal(facts, hold) or ServiceUnavailable(
                "The account is changing too fast, please retry.", retry_after=1
            )
        return balance

    async def settle(
        self,
        *,
        request_id: str,
        cost_micros: int,
        images: int,
        status_code: int = 200,
        error_code: str | None = None,
        latency_ms: int | None = None,
        route: str | None = None,
    ) -> SettleOutcome:
        """Finish a held request: keep `cost_micros`, give back the rest of the hold.

        A failed request is `settle(cost_micros=0, status_code=..., error_code=...)`. Happens
        once: a second settle, or a settle after the sweeper, changes nothing. `route`: the
        provider attempts, for the request log (`app.images.routing.RouteTrace`).
        """
        if cost_micros < 0 or images < 0:
            raise ValueError(f"cost and images must be >= 0, got {cost_micros}, {images}")
        if cost_micros > 0:
            note = f"unused part of the hold ({images} image(s) delivered)"
        else:
            note = f"request failed ({error_code or status_code})"
        with tracing.span("ledger.settle", {"gateway.cost_micros": cost_micros}) as span:
            finished = await self._shielded(
                self._finish(
                    Finish(
                        request_id=request_id,
                        cost_micros=cost_micros,
                        images=images,
                        status_code=status_code,
                        error_code=error_code,
                        latency_ms=latency_ms,
                        note=note,
                        route=route,
                    )
                )
            )
            if error_code is not None:
                tracing.fail(span, error_code)
        if finished is None:
            return await self._lost_race(request_id)
        model = finished.model or ""
        metrics.record_settle(
            model=model,
            cost_micros=finished.cost_micros,
            images=images,
            refund_micros=finished.refund_micros,
        )
        note_settled(model=model, cost_micros=finished.cost_micros, images=images, code=error_code)
        if finished.cost_micros < cost_micros:
            logger.error(
                "ledger: request %s cost %d above its hold %d; charged the hold",
                request_id,
                cost_micros,
                finished.held_micros,
            )
        return SettleOutcome(
            request_id=request_id,
            state="settled",
            held_micros=finished.held_micros,
            cost_micros=finished.cost_micros,
            refunded_micros=finished.refund_micros,
            balance_after_micros=finished.balance_after_micros,
        )

    async def _finish(self, finish: Finish) -> FinishedRequest | None:
        if self._postgres and finish.new_state == "settled":
            done = await self._settles.run(finish)  # alone, or batched if settles pile up
            if done is not ALONE:
                return done
        return await self._finish_alone(finish)

    async def _settle_batch(self, settles: Sequence[Finish]) -> dict[str, FinishedRequest]:
        """Postgres: the settles that refund nothing, in one statement (`SETTLE_BATCH`)."""
        async with self._hot() as statements:
            return await statements.settle_batch_keeping_holds(settles)

    async def _finish_alone(self, finish: Finish) -> FinishedRequest | None:
        for attempt in range(_HOLD_ATTEMPTS):
            try:
                async with self._finishing() as repo:
                    return await repo.finish_if_pending(finish)
            except DBAPIError as exc:  # one statement: a deadlock victim moved nothing
                if not _is_deadlock(exc) or attempt == _HOLD_ATTEMPTS - 1:
                    raise
                logger.warning(
                    "ledger: finishing %s was a deadlock victim; retrying", finish.request_id
                )
        raise AssertionError("unreachable")

    async def _shielded(self, work: Coroutine[Any, Any, T]) -> T:
        """Run `work` to the end even if the caller is cancelled (say, the client hung up).

        A settle interrupted mid-statement would leave its refund to the sweeper, hold_timeout
        later; shielded, it completes now. The task is kept referenced until it is done, and
        a failure nobody awaits any more is logged.
        """
        task = asyncio.ensure_future(work)
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        task.add_done_callback(_log_orphan_failure)
        return await asyncio.shield(task)

    async def wait_idle(self) -> None:
        """Wait for shielded settles still running (call at shutdown, before engine.dispose)."""
        await self._lanes.wait_idle()
        await self._settles.wait_idle()
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def _lost_race(self, request_id: str) -> SettleOutcome:
        async with self._read() as repo:
            state = _STATE_AFTER_LOST_RACE.get(await repo.request_state(request_id), "not_found")
        if state == "swept":
            logger.warning("ledger: request %s settled after the sweeper refunded it", request_id)
        elif state != "already_settled":
            logger.warning("ledger: settle of request %s found it %s", request_id, state)
        return SettleOutcome(request_id=request_id, state=state)

    async def log_unbilled(
        self,
        *,
        request_id: str,
        account_id: str | None,
        key_id: str | None,
        model: str | None,
        status_code: int,
        error_code: str | None,
        latency_ms: int | None,
        endpoint: str = "generations",
        user: str | None = None,
        client_request_id: str | None = None,
    ) -> None:
        """Log a request refused before any hold (validation 4xx, 402, 429 ...)."""
        if model is not None:
            note_model(model)
        if error_code == DatabaseUnavailable.default_code:
            # The database just did not answer (or its pool is exhausted): asking it again
            # would double the client's wait for its 503 and load a pool already full.
            logger.warning(
                "ledger: request %s refused by a database outage, not logged", request_id
            )
            return
        async with self._atomic() as repo:
            inserted = await repo.insert_unbilled(
                {
                    "id": request_id,
                    "account_id": account_id,
                    "key_id": key_id,
                    "model": model,
                    "status_code": status_code,
                    "error_code": error_code,
                    "latency_ms": latency_ms,
                    "endpoint": endpoint,
                    "user": user,
                    "client_request_id": client_request_id,
                }
            )
        if not inserted:
            logger.warning(
                "ledger: request %s is already logged; unbilled entry skipped", request_id
            )

    async def sweep(self, *, older_than_s: float) -> int:
        """Refund in full every hold still pending after `older_than_s`; how many were swept.

        Each request is flipped and refunded by one conditional statement, so any number of
        sweepers and settles may race: each request is finished exactly once.
        """
        swept = 0
        while True:
            async with self._read() as repo:
                stale = await repo.stale_pending_ids(older_than_s=older_than_s, limit=_SWEEP_BATCH)
            for request_id in stale:
                finished = await self._finish(
                    Finish(
                        request_id=request_id,
                        cost_micros=0,
                        images=0,
                        status_code=None,
                        error_code="HOLD_EXPIRED",
                        latency_ms=None,
                        note="hold expired unsettled (swept)",
                        new_state="swept",
                    )
                )
                if finished is not None:
                    swept += 1
                    metrics.record_sweep(refund_micros=finished.refund_micros)
                    logger.warning(
                        "ledger: swept request %s, refunded %d micros",
                        request_id,
                        finished.refund_micros,
                    )
            if len(stale) < _SWEEP_BATCH:
                return swept

    # reads -----------------------------------------------------------------------------
    async def ledger_page(
        self, account_id: str, *, limit: int, cursor: str | None
    ) -> tuple[list[LedgerRow], str | None]:
        """Newest first. `cursor` is the `next_cursor` of the previous page (None: first page)."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidParameter(f"limit must be between 1 and {MAX_PAGE}", param="limit")
        before_id = _parse_cursor(cursor)
        async with self._read() as repo:
            if await repo.get_account(account_id) is None:
                raise account_not_found(account_id)
            rows = await repo.entries_page(account_id, limit=limit + 1, before_id=before_id)
        if len(rows) > limit:
            return rows[:limit], str(rows[limit - 1].id)
        return rows, None

    async def balance_and_ledger_sum(self, account_id: str) -> tuple[int, int]:
        async with self._read() as repo:
            pair = await repo.balance_and_ledger_sum(account_id)
        if pair is None:
            raise account_not_found(account_id)
        return pair


def _check_amount(micros: int, param: str) -> None:
    try:
        check_amount(micros)
    except MoneyError as exc:
        raise InvalidParameter(f"{param}: {exc}", param=param) from None


def _parse_cursor(cursor: str | None) -> int | None:
    if cursor is None or cursor == "":
        return None
    return decode_id_cursor(cursor)


def _log_orphan_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("ledger: shielded settle failed", exc_info=task.exception())
