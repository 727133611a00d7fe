"""The hot account across processes (issue 9): holds batched per process, books exact.

- 2 gateway processes, far more concurrent generations than one account's balance covers
  (K): exactly K succeed, the rest get 402, the balance ends at the exact remainder and the
  ledger chains; and the holds really were batched (several charge rows share the
  `created_at` of the one statement that wrote them).
- kill -9 of a process with a batch of holds in flight: every hold it had committed is
  `pending`, and a surviving process's sweeper refunds each of them; nothing is lost.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from tests.e2e.test_money_multiprocess import (
    PRICE,
    fire,
    ledger_counts,
    pending_holds,
    run_db,
    seed_account,
    start_gateways,
    write_catalog,
)
from tests.support.books import assert_books_balance

pytestmark = pytest.mark.slow


@pytest.fixture
def postgres_url(postgres_session_url: str) -> str:
    from tests.support import databases

    asyncio.run(databases.truncate_postgres(postgres_session_url))
    return postgres_session_url


def charge_statements(url: str, account_id: str) -> tuple[int, int]:
    """(charge rows, distinct statement timestamps among them)."""

    async def read(engine):  # type: ignore[no-untyped-def]
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT count(*), count(DISTINCT created_at) FROM ledger_entries "
                        "WHERE account_id = :a AND kind = 'charge'"
                    ),
                    {"a": account_id},
                )
            ).one()
            return int(row[0]), int(row[1])

    return run_db(url, read)  # type: ignore[no-any-return]


def test_two_processes_on_one_hot_account_charge_exactly_k(
    postgres_url: str, tmp_path: Path
) -> None:
    k, asked = 450, 1_200
    # local provider answering after 30 ms: requests overlap, so holds wait on each other
    catalog = write_catalog(tmp_path, "http://127.0.0.1:9", latency_ms=30)
    account, secret = seed_account(postgres_url, k * PRICE + PRICE - 1)
    gateways = start_gateways(2, postgres_url, catalog, tmp_path)
    try:
        statuses = asyncio.run(fire([g.url for g in gateways], secret, "tiny", asked))
    finally:
        for gateway in gateways:
            gateway.stop()
    print(f"\n2 processes, {asked} concurrent on one account: {dict(statuses)}")
    assert statuses == {200: k, 402: asked - k}
    assert run_db(postgres_url, lambda e: assert_books_balance(e, account)) == PRICE - 1
    assert ledger_counts(postgres_url, account) == {"topup": 1, "charge": k}
    assert pending_holds(postgres_url) == 0
    charges, statements = charge_statements(postgres_url, account)
    assert charges == k and statements < k // 2, (charges, statements)


def test_sigkill_with_a_batch_of_holds_in_flight_refunds_every_one(
    postgres_url: str, tmp_path: Path
) -> None:
    in_flight = 40
    catalog = write_catalog(tmp_path, "http://127.0.0.1:9", latency_ms=60_000)
    account, secret = seed_account(postgres_url, 1_000 * PRICE)
    (victim,) = start_gateways(1, postgres_url, catalog, tmp_path)

    async def hang(client: httpx.AsyncClient, i: int) -> None:
        await client.post(
            f"{victim.url}/v1/images/generations",
            json={"model": "tiny", "prompt": f"slow {i}"},
            headers={"Authorization": f"Bearer {secret}"},
        )

    async def kill_when_held() -> None:
        async with httpx.AsyncClient(
            timeout=60, limits=httpx.Limits(max_connections=in_flight)
        ) as client:
            tasks = [asyncio.create_task(hang(client, i)) for i in range(in_flight)]
            for _ in range(300):
                await asyncio.sleep(0.05)
                if await asyncio.to_thread(pending_holds, postgres_url) == in_flight:
                    break
            victim.kill()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, httpx.TransportError) for r in results), results

    asyncio.run(kill_when_held())
    assert pending_holds(postgres_url) == in_flight
    charges, statements = charge_statements(postgres_url, account)
    assert charges == in_flight and statements < in_flight, (charges, statements)
    expected = (1_000 - in_flight) * PRICE
    assert run_db(postgres_url, lambda e: assert_books_balance(e, account)) == expected

    (survivor,) = start_gateways(
        1,
        postgres_url,
        catalog,
        tmp_path,
        GATEWAY_HOLD_TIMEOUT_S="1",
        GATEWAY_SWEEP_INTERVAL_S="0.2",
    )
    try:
        deadline = time.monotonic() + 20
        while pending_holds(postgres_url) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        survivor.stop()
    assert pending_holds(postgres_url) == 0
    assert run_db(postgres_url, lambda e: assert_books_balance(e, account)) == 1_000 * PRICE
    assert ledger_counts(postgres_url, account) == {
        "topup": 1,
        "charge": in_flight,
        "refund": in_flight,
    }
