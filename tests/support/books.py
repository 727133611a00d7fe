"""The books check every money test ends with: balance == sum(ledger), and the rows chain.

Written with its own SQL (not through `app.ledger`), so it checks the ledger rather than
trusting it. Per account, rows ordered by id must satisfy
`balance_after == previous balance_after + amount` (starting from 0), the last
`balance_after` must be the balance, and nothing may be negative.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


async def assert_books_balance(engine: AsyncEngine, account_id: str) -> int:
    """Assert the account's books are exact; returns the balance."""
    # ONE statement, so balance and rows come from one snapshot: two SELECTs could straddle a
    # concurrent refund (read committed on Postgres, no read transaction on pysqlite) and
    # report a mismatch that never existed.
    async with engine.connect() as connection:
        result = (
            await connection.execute(
                text(
                    "SELECT a.balance_micros, e.id, e.amount_micros, e.balance_after_micros "
                    "FROM accounts a LEFT JOIN ledger_entries e ON e.account_id = a.id "
                    "WHERE a.id = :id ORDER BY e.id"
                ),
                {"id": account_id},
            )
        ).all()
    assert result, f"no account {account_id}"
    balance = result[0][0]
    rows = [row[1:] for row in result if row[1] is not None]
    running = 0
    for row_id, amount, balance_after in rows:
        running += amount
        assert balance_after == running, (
            f"ledger row {row_id}: balance_after {balance_after} != {running}"
        )
        assert balance_after >= 0, f"ledger row {row_id} went negative"
    assert balance == running, f"balance {balance} != sum(ledger) {running}"
    assert balance >= 0
    return int(balance)
