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
    async with engine.connect() as connection:
        balance = (
            await connection.execute(
                text("SELECT balance_micros FROM accounts WHERE id = :id"), {"id": account_id}
            )
        ).scalar_one()
        rows = (
            await connection.execute(
                text(
                    "SELECT id, amount_micros, balance_after_micros FROM ledger_entries "
                    "WHERE account_id = :id ORDER BY id"
                ),
                {"id": account_id},
            )
        ).all()
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
