"""Many concurrent requests on ONE account: never negative, never lost, never double-charged.

Each test drives the ledger with asyncio.gather over the engine's pool (30 connections), so the
statements really interleave in the database. The multi-process version (4 gateway processes on
one Postgres) lives with the end-to-end tests.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.errors import InsufficientBalance
from app.ledger import Ledger
from tests.support.books import assert_books_balance
from tests.support.factories import make_account, make_key

pytestmark = pytest.mark.anyio

PRICE = 134_000


def rid() -> str:
    return "req_" + uuid.uuid4().hex


async def test_500_concurrent_holds_take_exactly_what_the_balance_covers(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    covered = 137
    account = await make_account(engine, covered * PRICE)
    key, _ = await make_key(engine, account)

    async def one() -> int | Exception:
        try:
            return await ledger.hold(
                request_id=rid(), account_id=account, key_id=key, model="m", amount_micros=PRICE
            )
        except InsufficientBalance as exc:
            return exc

    started = time.perf_counter()
    results = await asyncio.gather(*(one() for _ in range(500)))
    elapsed = time.perf_counter() - started

    balances = sorted(r for r in results if isinstance(r, int))
    refused = [r for r in results if isinstance(r, InsufficientBalance)]
    assert len(balances) == covered
    assert len(refused) == 500 - covered
    # every successful hold saw a distinct balance: no two debits from the same money
    assert balances == [i * PRICE for i in range(covered)]
    assert await assert_books_balance(engine, account) == 0
    print(
        f"\n[{engine.dialect.name}] 500 concurrent holds ({covered} ok) in {elapsed:.3f}s: "
        f"{500 / elapsed:.0f} holds/s"
    )


async def test_all_successful_concurrent_holds_and_settles(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    n = 500
    account = await make_account(engine, n * PRICE)
    key, _ = await make_key(engine, account)
    requests = [rid() for _ in range(n)]

    started = time.perf_counter()
    await asyncio.gather(
        *(
            ledger.hold(
                request_id=r, account_id=account, key_id=key, model="m", amount_micros=PRICE
            )
            for r in requests
        )
    )
    held = time.perf_counter()
    # half delivered everything, half delivered nothing
    await asyncio.gather(
        *(
            ledger.settle(request_id=r, cost_micros=PRICE if i % 2 else 0, images=i % 2)
            for i, r in enumerate(requests)
        )
    )
    settled = time.perf_counter()

    assert await assert_books_balance(engine, account) == (n // 2) * PRICE
    print(
        f"\n[{engine.dialect.name}] {n} holds: {n / (held - started):.0f}/s, "
        f"{n} settles: {n / (settled - held):.0f}/s"
    )


async def test_mixed_traffic_with_sweepers_conserves_money(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    """Holds, settles (full, partial, failed), credits and eager sweepers all at once.

    The sweepers use older_than_s=0, so they race settles for in-flight requests: whoever
    flips the request first wins, and the money must still add up to the cent.
    """
    rng = random.Random(7)
    initial = 20 * PRICE
    account = await make_account(engine, initial)
    key, _ = await make_key(engine, account)
    credits: list[int] = []

    async def request() -> None:
        request_id = rid()
        amount = rng.choice([PRICE, 2 * PRICE, 3 * PRICE])
        try:
            await ledger.hold(
                request_id=request_id,
                account_id=account,
                key_id=key,
                model="m",
                amount_micros=amount,
            )
        except InsufficientBalance:
            return
        await asyncio.sleep(rng.random() / 100)
        cost = rng.choice([amount, amount - PRICE, 0])
        await ledger.settle(request_id=request_id, cost_micros=cost, images=cost // PRICE)

    async def topup() -> None:
        amount = rng.choice([PRICE, 5 * PRICE])
        await ledger.credit(account_id=account, amount_micros=amount, note=None)
        credits.append(amount)

    async def sweeper() -> None:
        for _ in range(10):
            await Ledger(engine).sweep(older_than_s=0)
            await asyncio.sleep(0.005)

    tasks = [request() for _ in range(300)] + [topup() for _ in range(20)]
    tasks += [sweeper() for _ in range(3)]
    rng.shuffle(tasks)
    await asyncio.gather(*tasks)

    balance = await assert_books_balance(engine, account)
    async with engine.connect() as connection:
        kept = (
            await connection.execute(
                text(
                    "SELECT coalesce(sum(cost_micros), 0) FROM request_log "
                    "WHERE account_id = :a AND state = 'settled'"
                ),
                {"a": account},
            )
        ).scalar_one()
        pending = (
            await connection.execute(
                text(
                    "SELECT count(*) FROM request_log WHERE account_id = :a AND state = 'pending'"
                ),
                {"a": account},
            )
        ).scalar_one()
    assert pending == 0
    assert balance == initial + sum(credits) - kept
