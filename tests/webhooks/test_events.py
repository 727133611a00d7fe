"""Where events come from: written to the outbox by the change that caused them (the money
statements, the budgeted hold), once per occurrence, on SQLite and Postgres alike."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import WebhookEvent
from app.errors import BudgetExceeded
from app.ledger import Ledger
from app.ledger.budgets import Budget, BudgetRepository
from tests.support.books import assert_books_balance
from tests.support.clock import FakeUtcClock
from tests.support.factories import make_account, make_key
from tests.webhooks.conftest import Hooks

pytestmark = pytest.mark.anyio

USD = 1_000_000


def rid() -> str:
    return "req_" + uuid.uuid4().hex


async def outbox(engine: AsyncEngine, event_type: str) -> list[dict[str, object]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(WebhookEvent.data)
            .where(WebhookEvent.event_type == event_type)
            .order_by(WebhookEvent.created_at)
        )
        return [orjson.loads(row.data) for row in rows]


async def hold(ledger: Ledger, account: str, key: str, micros: int) -> str:
    request_id = rid()
    await ledger.hold(
        request_id=request_id, account_id=account, key_id=key, model="m", amount_micros=micros
    )
    return request_id


async def test_a_debit_crossing_the_threshold_writes_one_event_until_a_credit_rearms_it(
    engine: AsyncEngine,
) -> None:
    ledger = Ledger(engine)
    account = await make_account(engine, 10 * USD)
    key, _ = await make_key(engine, account)
    await ledger.update_account(account, low_balance_threshold_micros=5 * USD)

    await hold(ledger, account, key, 4 * USD)  # 6: above
    assert await outbox(engine, "balance.below_threshold") == []
    crossing = await hold(ledger, account, key, 2 * USD)  # 4: crossed
    await hold(ledger, account, key, 1 * USD)  # 3: still below, no new crossing
    expected = {"account_id": account, "balance_micros": 4 * USD, "threshold_micros": 5 * USD}
    assert await outbox(engine, "balance.below_threshold") == [expected]

    await ledger.settle(request_id=crossing, cost_micros=0, images=0, status_code=502)  # 5
    await hold(ledger, account, key, 1 * USD)  # 4: crossed again, but no credit since: muted
    assert len(await outbox(engine, "balance.below_threshold")) == 1

    await ledger.credit(account_id=account, amount_micros=10 * USD, note="top-up")  # 14: re-armed
    await ledger.credit(account_id=account, amount_micros=-10 * USD, note="fix", kind="adjustment")
    events = await outbox(engine, "balance.below_threshold")
    assert len(events) == 2 and events[1]["balance_micros"] == 4 * USD  # the adjustment crossed
    await assert_books_balance(engine, account)


async def test_concurrent_holds_cross_the_threshold_exactly_once(engine: AsyncEngine) -> None:
    ledger = Ledger(engine)
    account = await make_account(engine, 100 * USD)
    key, _ = await make_key(engine, account)
    await ledger.update_account(account, low_balance_threshold_micros=50 * USD)
    await asyncio.gather(*(hold(ledger, account, key, USD) for _ in range(80)))
    assert len(await outbox(engine, "balance.below_threshold")) == 1
    assert await assert_books_balance(engine, account) == 20 * USD


async def test_no_threshold_no_event(engine: AsyncEngine) -> None:
    ledger = Ledger(engine)
    account = await make_account(engine, 10 * USD)
    key, _ = await make_key(engine, account)
    await hold(ledger, account, key, 10 * USD)
    assert await outbox(engine, "balance.below_threshold") == []


async def test_a_budget_used_up_or_refusing_announces_itself_once_per_window(
    engine: AsyncEngine,
) -> None:
    clock = FakeUtcClock(datetime(2026, 12, 2, 12, tzinfo=UTC))
    ledger = Ledger(engine, clock=clock)
    account = await make_account(engine, 100 * USD)
    key, _ = await make_key(engine, account)
    other, _ = await make_key(engine, account)
    async with engine.begin() as conn:
        await BudgetRepository(conn).replace(key_id=key, budgets=[Budget("day", 2 * USD)])
        await BudgetRepository(conn).replace(key_id=other, budgets=[Budget("total", 3 * USD)])

    await hold(ledger, account, key, USD)
    assert await outbox(engine, "budget.reached") == []
    await hold(ledger, account, key, USD)  # exactly used up: announced with this hold
    for _ in range(3):
        with pytest.raises(BudgetExceeded):
            await hold(ledger, account, key, USD)
    [reached] = await outbox(engine, "budget.reached")
    assert reached == {
        "account_id": account,
        "key_id": key,
        "period": "day",
        "window": "day:2026-12-02",
        "amount_micros": 2 * USD,
        "reason": "exhausted",
    }

    await hold(ledger, account, other, 2 * USD)
    with pytest.raises(BudgetExceeded):  # 2 + 2 > 3: refused before it was used up
        await hold(ledger, account, other, 2 * USD)
    with pytest.raises(BudgetExceeded):
        await hold(ledger, account, other, 2 * USD)
    refused = (await outbox(engine, "budget.reached"))[1:]
    assert [(e["key_id"], e["window"], e["reason"]) for e in refused] == [
        (other, "total", "refused")
    ]

    clock.now += timedelta(days=1)  # a new day: a new window, announced again when reached
    await hold(ledger, account, key, 2 * USD)
    windows = [e["window"] for e in await outbox(engine, "budget.reached")]
    assert windows == ["day:2026-12-02", "total", "day:2026-12-03"]
    await assert_books_balance(engine, account)


async def test_keys_expiring_within_the_window_are_announced_once_per_expiry(
    hooks: Hooks,
) -> None:
    engine, now = hooks.engine, hooks.clock.now
    account = await make_account(engine)
    soon, _ = await make_key(engine, account, expires_at=now + timedelta(days=3), name="ci")
    await make_key(engine, account, expires_at=now + timedelta(days=30))  # outside the window
    await make_key(engine, account, expires_at=now + timedelta(days=2), revoked=True)
    await make_key(engine, account, expires_at=now - timedelta(days=1))  # already expired

    assert await hooks.dispatcher.scan_expiring_keys() == 1
    assert await hooks.dispatcher.scan_expiring_keys() == 0  # once per key and expiry
    [event] = await outbox(engine, "key.expiring")
    assert event["key_id"] == soon and event["name"] == "ci" and event["account_id"] == account
    assert str(event["expires_at"]).startswith("2026-12-06T09:00:00")
