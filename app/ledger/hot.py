"""Postgres: the per-request money statements on the asyncpg connection itself.

The single hold, the batched hold, FINISH (settle) and the batched settle run the SAME SQL as
`app.ledger.postgres_sql` (binds made positional) on a connection checked out of the engine's
own pool, prepared once per connection, with no SQLAlchemy statement machinery around them
(`app.db.raw`: errors are still classified by `app.db.faults`). Measured: docs/decisions.md
"Raw asyncpg for the money statements".
"""

from __future__ import annotations

from collections.abc import Sequence

from app.db.raw import RawConnection, RawStatement
from app.ledger import postgres_sql
from app.ledger.repository import (
    Finish,
    FinishedRequest,
    HoldRequest,
    finish_params,
    finished_request,
    hold_batch_params,
    hold_params,
    settle_batch_params,
    settled_keeping_holds,
)

HOLD = RawStatement(postgres_sql.HOLD_SQL)
HOLD_BATCH = RawStatement(postgres_sql.HOLD_BATCH_SQL)
FINISH = RawStatement(postgres_sql.FINISH_SQL)
SETTLE_BATCH = RawStatement(postgres_sql.SETTLE_BATCH_SQL)


class HotStatements:
    """What `LedgerRepository` does for these four, on a `RawConnection`."""

    def __init__(self, connection: RawConnection) -> None:
        self._conn = connection

    async def debit_if_covered(self, hold: HoldRequest) -> int | None:
        rows = await self._conn.fetch(HOLD, hold_params(hold))
        return int(rows[0]["balance_micros"]) if rows else None

    async def debit_batch_if_covered(
        self, account_id: str, holds: Sequence[HoldRequest]
    ) -> dict[str, int]:
        rows = await self._conn.fetch(HOLD_BATCH, hold_batch_params(account_id, holds))
        return {row["request_id"]: int(row["balance_after"]) for row in rows}

    async def finish_if_pending(self, finish: Finish) -> FinishedRequest | None:
        rows = await self._conn.fetch(FINISH, finish_params(finish))
        return finished_request(rows[0]) if rows else None

    async def settle_batch_keeping_holds(
        self, settles: Sequence[Finish]
    ) -> dict[str, FinishedRequest]:
        return settled_keeping_holds(
            await self._conn.fetch(SETTLE_BATCH, settle_batch_params(settles))
        )
