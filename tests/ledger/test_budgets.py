"""Per-key budgets in the hold (SPEC 9): refused before anything moves, given back on refund,
exact under concurrency, and calendar windows that roll over at the account's midnight."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import Account
from app.errors import BudgetExceeded, InsufficientBalance
from app.ledger import Ledger
from app.ledger.budgets import Budget, BudgetRepository, window_of
from tests.support.books import assert_books_balance
from tests.support.factories import make_account, make_key

pytestmark = pytest.mark.anyio

PRICE = 1_000


def rid() -> str:
    return "req_" + uuid.uuid4().hex


async def set_budgets(engine: AsyncEngine, key_id: str, *budgets: tuple[str, int]) -> None:
    async with engine.begin() as conn:
        await BudgetRepository(conn).replace(
            key_id=key_id,
            budgets=[Budget(period, amount) for period, amount in budgets],  # type: ignore[arg-type]
        )


async def spend(engine: AsyncEngine, key_id: str) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text('SELECT "window", spent_micros FROM key_spend WHERE key_id = :k'), {"k": key_id}
        )
        return {window: int(spent) for window, spent in rows}


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def test_a_hold_over_the_budget_is_refused_and_moves_nothing(engine: AsyncEngine) -> None:
    ledger = Ledger(engine, clock=FakeClock(datetime(2026, 12, 2, 12, tzinfo=UTC)))
    account = await make_account(engine, 1_000 * PRICE)
    key, _ = await make_key(engine, account)
    await set_budgets(engine, key, ("day", 2 * PRICE), ("total", 10 * PRICE))

    for _ in range(2):
        await ledger.hold(
            request_id=rid(), account_id=account, key_id=key, model="m", amount_micros=PRICE
        )
    with pytest.raises(BudgetExceeded) as refused:
        await ledger.hold(
            request_id=rid(), account_id=account, key_id=key, model="m", amount_micros=PRICE
        )
    assert refused.value.status == 402 and refused.value.code == "BUDGET_EXCEEDED"
    assert "daily budget of $0.002" in refused.value.message
    assert await spend(engine, key) == {"day:2026-12-02": 2 * PRICE, "total": 2 * PRICE}
    assert await assert_books_balance(engine, account) == 998 * PRICE


async def test_a_refund_gives_the_budget_back(engine: AsyncEngine) -> None:
    ledger = Ledger(engine, clock=FakeClock(datetime(2026, 12, 2, 12, tzinfo=UTC)))
    account = await make_account(engine, 1_000 * PRICE)
    key, _ = await make_key(engine, account)
    await set_budgets(engine, key, ("month", 3 * PRICE))

    first, second = rid(), rid()
    await ledger.hold(
        request_id=first, account_id=account, key_id=key, model="m", amount_micros=2 * PRICE
    )
    await ledger.hold(
        request_id=second, account_id=account, key_id=key, model="m", amount_micros=PRICE
    )
    # the first delivered half of its hold, the second failed: 2 * PRICE back to the budget
    await ledger.settle(request_id=first, cost_micros=PRICE, images=1)
    await ledger.settle(request_id=second, cost_micros=0, images=0, status_code=502)
    assert await spend(engine, key) == {"month:2026-12": PRICE}
    await ledger.hold(
        request_id=rid(), account_id=account, key_id=key, model="m", amount_micros=2 * PRICE
    )
    assert await spend(engine, key) == {"month:2026-12": 3 * PRICE}
    assert await assert_books_balance(engine, account) == 997 * PRICE


async def test_a_swept_hold_gives_the_budget_back(engine: AsyncEngine) -> None:
    ledger = Ledger(engine)
    account = await make_account(engine, 10 * PRICE)
    key, _ = await make_key(engine, account)
    await set_budgets(engine, key, ("total", 5 * PRICE))
    await ledger.hold(
        request_id=rid(), account_id=account, key_id=key, model="m", amount_micros=PRICE
    )
    assert await ledger.sweep(older_than_s=-1) == 1
    assert await spend(engine, key) == {"total": 0}
    assert await assert_books_balance(engine, account) == 10 * PRICE


async def test_the_balance_still_binds_a_budgeted_key(engine: AsyncEngine) -> None:
    ledger = Ledger(engine)
    account = await make_account(engine, PRICE)
    key, _ = await make_key(engine, account)
    await set_budgets(engine, key, ("total", 100 * PRICE))
    await ledger.hold(
        request_id=rid(), account_id=account, key_id=key, model="m", amount_micros=PRICE
    )
    with pytest.raises(InsufficientBalance):
        await ledger.hold(
            request_id=rid(), account_id=account, key_id=key, model="m", amount_micros=PRICE
        )
    # the refused hold rolled its budget counter back with it
    assert await spend(engine, key) == {"total": PRICE}


async def test_windows_follow_the_account_time_zone_across_midnight(engine: AsyncEngine) -> None:
    clock = FakeClock(datetime(2026, 12, 2, 22, 59, tzinfo=UTC))  # 23:59 in Berlin
    ledger = Ledger(engine, clock=clock)
    account = await make_account(engine, 1_000 * PRICE)
    async with engine.begin() as conn:
        await conn.execute(
            update(Account).where(Account.id == account).values(timezone="Europe/Berlin")
        )
    key, _ = await make_key(engine, account)
    await set_budgets(engine, key, ("day", PRICE))

    await ledger.hold(
        request_id=rid(), account_id=account, key_id=key, model="m", amount_micros=PRICE
    )
    with pytest.raises(BudgetExceeded):
        await ledger.hold(
            request_id=rid(), account_id=account, key_id=key, model="m", amount_micros=PRICE
        )
    clock.now = datetime(2026, 12, 2, 23, 0, tzinfo=UTC)  # midnight in Berlin: a new day
    await ledger.hold(
        request_id=rid(), account_id=account, key_id=key, model="m", amount_micros=PRICE
    )
    assert await spend(engine, key) == {"day:2026-12-02": PRICE, "day:2026-12-03": PRICE}


async def test_300_concurrent_holds_pass_exactly_the_daily_budget(engine: AsyncEngine) -> None:
    covered = 77
    ledger = Ledger(engine)
    account = await make_account(engine, 10_000 * PRICE)
    key, _ = await make_key(engine, account)
    await set_budgets(engine, key, ("day", covered * PRICE), ("total", 1_000 * PRICE))

    async def one() -> str:
        try:
            await ledger.hold(
                request_id=rid(), account_id=account, key_id=key, model="m", amount_micros=PRICE
            )
        except BudgetExceeded:
            return "refused"
        return "held"

    results = await asyncio.gather(*(one() for _ in range(300)))
    assert results.count("held") == covered
    day = window_of("day", datetime.now(UTC), "UTC")
    assert await spend(engine, key) == {day: covered * PRICE, "total": covered * PRICE}
    assert await assert_books_balance(engine, account) == (10_000 - covered) * PRICE


async def test_a_budget_added_after_the_first_hold_is_enforced_at_once(
    engine: AsyncEngine,
) -> None:
    ledger = Ledger(engine)
    account = await make_account(engine, 100 * PRICE)
    key, _ = await make_key(engine, account)
    await ledger.hold(
        request_id=rid(), account_id=account, key_id=key, model="m", amount_micros=PRICE
    )
    await set_budgets(engine, key, ("total", PRICE))
    await ledger.hold(
        request_id=rid(), account_id=account, key_id=key, model="m", amount_micros=PRICE
    )
    with pytest.raises(BudgetExceeded):
        await ledger.hold(
            request_id=rid(), account_id=account, key_id=key, model="m", amount_micros=PRICE
        )
