"""The hot account (issue 9): holds on one busy account are batched, and stay exact.

`app.ledger.batching` keeps one hold statement in flight per account and process and batches
what waits behind it (`postgres_sql.HOLD_BATCH`). These tests drive it with many concurrent
holds, from one `Ledger` and from two (two engines: two processes' worth of connections and
lanes), and check it really batched (a batch's rows share their transaction's `created_at`)
while the books stay exact: never below zero, exactly what the balance covers, every row
chained. Postgres only: SQLite keeps the single-hold path (one writer at a time anyway).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.engine import make_engine
from app.errors import (
    BudgetExceeded,
    Conflict,
    GatewayError,
    InsufficientBalance,
    PermissionDenied,
)
from app.ledger import Ledger
from app.ledger.batching import ALONE, hold_lanes
from app.ledger.budgets import Budget, BudgetRepository
from app.ledger.repository import HoldRequest
from tests.support.books import assert_books_balance
from tests.support.factories import make_account, make_key

pytestmark = pytest.mark.anyio

PRICE = 2_000


def outcome(result: int | Exception) -> str:
    if isinstance(result, int):
        return "held"
    for kind in (BudgetExceeded, Conflict, InsufficientBalance, PermissionDenied):
        if isinstance(result, kind):
            return kind.__name__
    return repr(result)


def rid() -> str:
    return "req_" + uuid.uuid4().hex


#: these run on Postgres only (SQLite keeps the single-hold path): the SQLite variant of the
#: shared `database_url` fixture is not collected at all, rather than collected and skipped
postgres_only = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


async def statements_per_charge(engine: AsyncEngine, account: str) -> tuple[int, int]:
    """(charge rows, distinct transaction timestamps among them): fewer timestamps than rows
    means several charges were written by one statement."""
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text(
                    "SELECT count(*), count(DISTINCT created_at) FROM ledger_entries "
                    "WHERE account_id = :a AND kind = 'charge'"
                ),
                {"a": account},
            )
        ).one()
    return int(row[0]), int(row[1])


async def hold_or_refusal(ledger: Ledger, account: str, key: str, **extra: str) -> int | Exception:
    try:
        return await ledger.hold(
            request_id=extra.get("request_id", rid()),
            account_id=account,
            key_id=key,
            model="m",
            amount_micros=PRICE,
        )
    except GatewayError as exc:
        return exc


@postgres_only
async def test_a_hot_account_is_held_in_batches_exactly(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    n = 400
    account = await make_account(engine, n * PRICE + PRICE // 2)
    key, _ = await make_key(engine, account)

    results = await asyncio.gather(*(hold_or_refusal(ledger, account, key) for _ in range(n)))

    balances = sorted(r for r in results if isinstance(r, int))
    # every hold saw its own balance: no two took the same money
    assert balances == [PRICE // 2 + i * PRICE for i in range(n)]
    assert ledger._lanes.batches > 0 and ledger._lanes.batched > n // 2
    charges, statements = await statements_per_charge(engine, account)
    assert charges == n and statements < n // 4
    assert await assert_books_balance(engine, account) == PRICE // 2


@postgres_only
async def test_two_processes_on_a_balance_covering_k_take_exactly_k(
    engine: AsyncEngine, database_url: str
) -> None:
    k, asked = 173, 600
    account = await make_account(engine, k * PRICE + PRICE - 1)  # one micro short of k + 1
    key, _ = await make_key(engine, account)
    engines = [make_engine(database_url, pool_size=10) for _ in range(2)]
    ledgers = [Ledger(e) for e in engines]
    try:
        results = await asyncio.gather(
            *(hold_or_refusal(ledgers[i % 2], account, key) for i in range(asked))
        )
    finally:
        for e in engines:
            await e.dispose()

    held = sorted(r for r in results if isinstance(r, int))
    refused = Counter(outcome(r) for r in results if not isinstance(r, int))
    assert len(held) == k
    assert refused == {InsufficientBalance.__name__: asked - k}
    assert held == [PRICE - 1 + i * PRICE for i in range(k)]  # never below zero, none twice
    assert sum(lg._lanes.batches for lg in ledgers) > 0
    assert await assert_books_balance(engine, account) == PRICE - 1


@postgres_only
async def test_a_batch_refuses_each_unusable_key_exactly_and_holds_the_rest(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    account = await make_account(engine, 10_000 * PRICE)
    good, _ = await make_key(engine, account)
    revoked, _ = await make_key(engine, account)
    budgeted, _ = await make_key(engine, account)
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE api_keys SET revoked_at = now() WHERE id = :k"), {"k": revoked}
        )
        await BudgetRepository(connection).replace(
            key_id=budgeted, budgets=[Budget("total", 3 * PRICE)]
        )
    keys = [good, revoked, budgeted] * 20
    results = await asyncio.gather(*(hold_or_refusal(ledger, account, k) for k in keys))
    assert ledger._lanes.batches > 0

    by_key: dict[str, Counter[str]] = {good: Counter(), revoked: Counter(), budgeted: Counter()}
    for k, r in zip(keys, results, strict=True):
        by_key[k][outcome(r)] += 1
    assert by_key[good] == {"held": 20}
    assert by_key[revoked] == {PermissionDenied.__name__: 20}
    # exactly its budget, counted on the budgeted path
    assert by_key[budgeted] == {"held": 3, BudgetExceeded.__name__: 17}

    # a request id used twice in one batch: the batch fails, each is held alone, one wins
    reused = rid()
    results = await asyncio.gather(
        *(hold_or_refusal(ledger, account, good) for _ in range(10)),
        *(hold_or_refusal(ledger, account, good, request_id=reused) for _ in range(3)),
    )
    assert Counter(outcome(r) for r in results) == {"held": 11, Conflict.__name__: 2}
    balance = await assert_books_balance(engine, account)
    assert balance == (10_000 - 20 - 3 - 11) * PRICE


async def test_a_waiter_cancelled_before_its_batch_writes_nothing() -> None:
    """The lane alone, with the database replaced by events the test controls."""
    release = asyncio.Event()
    batches: list[list[str]] = []

    async def hold_one(hold: HoldRequest) -> int | None:
        await release.wait()
        return 1

    async def hold_many(holds: object) -> dict[str, int]:
        ids = [h.request_id for h in holds]  # type: ignore[attr-defined]
        batches.append(ids)
        return dict.fromkeys(ids[:-1], 7)  # the last one is "not held": its caller goes alone

    lanes = hold_lanes(hold_one, hold_many)

    def request(request_id: str) -> HoldRequest:
        return HoldRequest(request_id, "acct", "key", "m", PRICE)

    first = asyncio.create_task(lanes.run(request("r0")))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(lanes.run(request(f"r{i}"))) for i in range(1, 5)]
    await asyncio.sleep(0)
    waiting[1].cancel()  # r2 gives up while r0's statement is still running
    release.set()
    assert await first == 1
    results = await asyncio.gather(*waiting, return_exceptions=True)

    assert batches == [["r1", "r3", "r4"]]  # r2 was never sent to the database
    assert results[0] == 7 and results[2] == 7 and results[3] is ALONE
    assert isinstance(results[1], asyncio.CancelledError)
    await lanes.wait_idle()
    assert lanes._lanes == {}  # the lane is freed once nothing waits


@postgres_only
async def test_settles_that_keep_their_hold_are_batched_and_refunds_stay_exact(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    n = 300
    account = await make_account(engine, n * PRICE)
    key, _ = await make_key(engine, account)
    requests = [rid() for _ in range(n)]
    await asyncio.gather(
        *(
            ledger.hold(
                request_id=r, account_id=account, key_id=key, model="m", amount_micros=PRICE
            )
            for r in requests
        )
    )
    # a third keeps the hold, a third is refunded in full, a third asks for more than its hold
    costs = [(PRICE, 0, PRICE + 5)[i % 3] for i in range(n)]
    outcomes = await asyncio.gather(
        *(
            ledger.settle(request_id=r, cost_micros=c, images=1 if c else 0)
            for r, c in zip(requests, costs, strict=True)
        ),
        # a second settle of the same request, with the same cost: which of the two wins is
        # scheduling (a batch may run before the first's FINISH), so the books cannot tell
        *(
            ledger.settle(request_id=r, cost_micros=c, images=1 if c else 0)
            for r, c in zip(requests[:30], costs[:30], strict=True)
        ),
    )

    assert ledger._settles.batches > 0 and ledger._settles.batched >= n // 3
    firsts, seconds = outcomes[:n], outcomes[n:]
    # each request settled exactly once, whoever came first; a second settle changes nothing
    for first, second in zip(firsts[:30], seconds, strict=True):
        assert sorted([first.state, second.state]) == ["already_settled", "settled"]
    settled = {o.request_id: o for o in outcomes if o.state == "settled"}
    assert len(settled) == n
    kept = sum(o.cost_micros for o in settled.values())
    refunded = sum(o.refunded_micros for o in settled.values())
    assert kept == (n - n // 3) * PRICE and refunded == (n // 3) * PRICE
    assert await assert_books_balance(engine, account) == (n // 3) * PRICE
    async with engine.connect() as connection:
        states = dict(
            (
                await connection.execute(
                    text(
                        "SELECT state, count(*) FROM request_log WHERE account_id = :a "
                        "GROUP BY state"
                    ),
                    {"a": account},
                )
            ).all()
        )
    assert states == {"settled": n}
