"""The sweeper refunds holds left pending by a dead process, exactly once."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.ledger import Ledger
from app.ledger.sweeper import Sweeper
from tests.support.books import assert_books_balance
from tests.support.factories import make_account, make_key

pytestmark = pytest.mark.anyio


async def age(engine: AsyncEngine, request_id: str, seconds: int) -> None:
    """Pretend the hold was taken `seconds` ago (same storage format as the ledger writes)."""
    async with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            sql = (
                "UPDATE request_log SET created_at = now() - make_interval(secs => :s)"
                " WHERE id = :id"
            )
            await connection.execute(text(sql), {"s": seconds, "id": request_id})
        else:
            sql = (
                "UPDATE request_log SET created_at = "
                "strftime('%Y-%m-%d %H:%M:%f000', 'now', :modifier) WHERE id = :id"
            )
            await connection.execute(
                text(sql), {"modifier": f"-{seconds} seconds", "id": request_id}
            )


async def state(engine: AsyncEngine, request_id: str) -> str:
    async with engine.connect() as connection:
        return str(
            (
                await connection.execute(
                    text("SELECT state FROM request_log WHERE id = :id"), {"id": request_id}
                )
            ).scalar_one()
        )


async def hold(ledger: Ledger, account: str, key: str, amount: int) -> str:
    request_id = "req_" + uuid.uuid4().hex
    await ledger.hold(
        request_id=request_id, account_id=account, key_id=key, model="m", amount_micros=amount
    )
    return request_id


async def test_sweep_refunds_only_old_pending_holds(engine: AsyncEngine, ledger: Ledger) -> None:
    account = await make_account(engine, 1_000_000)
    key, _ = await make_key(engine, account)
    old = await hold(ledger, account, key, 100_000)
    fresh = await hold(ledger, account, key, 200_000)
    old_settled = await hold(ledger, account, key, 300_000)
    await ledger.settle(request_id=old_settled, cost_micros=300_000, images=1)
    for request_id in (old, old_settled):
        await age(engine, request_id, 3600)

    assert await ledger.sweep(older_than_s=900) == 1
    assert await state(engine, old) == "swept"
    assert await state(engine, fresh) == "pending"
    assert await state(engine, old_settled) == "settled"
    assert await assert_books_balance(engine, account) == 500_000
    rows, _ = await ledger.ledger_page(account, limit=1, cursor=None)
    assert (rows[0].kind, rows[0].amount_micros, rows[0].request_id) == ("refund", 100_000, old)

    assert await ledger.sweep(older_than_s=900) == 0  # nothing left to do
    assert await assert_books_balance(engine, account) == 500_000


async def test_settle_after_sweep_does_nothing(engine: AsyncEngine, ledger: Ledger) -> None:
    account = await make_account(engine, 1_000_000)
    key, _ = await make_key(engine, account)
    request_id = await hold(ledger, account, key, 400_000)
    await age(engine, request_id, 60)
    assert await ledger.sweep(older_than_s=30) == 1

    late = await ledger.settle(request_id=request_id, cost_micros=100_000, images=1)

    assert late.state == "swept" and not late.settled and late.refunded_micros == 0
    assert await state(engine, request_id) == "swept"
    assert await assert_books_balance(engine, account) == 1_000_000  # the request ended up free


async def test_concurrent_sweepers_and_settles_refund_each_request_once(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    account = await make_account(engine, 10_000_000)
    key, _ = await make_key(engine, account)
    requests = [await hold(ledger, account, key, 100_000) for _ in range(40)]
    for request_id in requests:
        await age(engine, request_id, 60)

    # four sweepers (as if four processes) race forty settles that each keep 40% of the hold
    results = await asyncio.gather(
        *(Ledger(engine).sweep(older_than_s=30) for _ in range(4)),
        *(ledger.settle(request_id=r, cost_micros=40_000, images=1) for r in requests),
    )
    swept = sum(n for n in results[:4] if isinstance(n, int))
    settled = sum(1 for outcome in results[4:] if not isinstance(outcome, int) and outcome.settled)
    assert swept + settled == 40

    balance = await assert_books_balance(engine, account)
    # swept requests cost nothing, settled ones cost 40_000 each
    assert balance == 10_000_000 - settled * 40_000
    async with engine.connect() as connection:
        refunds = (
            await connection.execute(
                text(
                    "SELECT count(*) FROM ledger_entries WHERE kind = 'refund' AND account_id = :a"
                ),
                {"a": account},
            )
        ).scalar_one()
    assert refunds == 40


async def test_sweeper_task_runs_and_stops_cleanly(engine: AsyncEngine, ledger: Ledger) -> None:
    account = await make_account(engine, 1_000_000)
    key, _ = await make_key(engine, account)
    request_id = await hold(ledger, account, key, 250_000)
    await age(engine, request_id, 60)

    sweeper = Sweeper(ledger)
    task = sweeper.start(interval_s=0.05, hold_timeout_s=30)
    for _ in range(100):
        if await state(engine, request_id) == "swept":
            break
        await asyncio.sleep(0.02)
    await sweeper.stop()
    assert task.done()
    assert await state(engine, request_id) == "swept"
    assert await assert_books_balance(engine, account) == 1_000_000


async def test_sweeper_survives_database_errors(engine: AsyncEngine) -> None:
    class FlakyLedger(Ledger):
        calls = 0

        async def sweep(self, *, older_than_s: float) -> int:
            FlakyLedger.calls += 1
            if FlakyLedger.calls == 1:
                raise RuntimeError("database went away")
            return 0

    sweeper = Sweeper(FlakyLedger(engine))
    sweeper.start(interval_s=0.01, hold_timeout_s=30)
    for _ in range(100):
        if FlakyLedger.calls >= 3:
            break
        await asyncio.sleep(0.01)
    await sweeper.stop()
    assert FlakyLedger.calls >= 3
