"""The sweeper: gives back holds whose process died before settling them.

Every gateway process runs one (started by the app lifespan). Running several at once is safe:
each stale request is refunded by one conditional statement (`state = 'pending'` -> `swept`),
so whichever process, sweeper or settle, flips a row first refunds it and everyone else sees no
row. A database error is logged and the loop goes on at the next tick; only cancellation stops
it. It also purges expired idempotency records when given a store.

    sweeper = Sweeper(ledger, idempotency=store)
    task = sweeper.start(interval_s=settings.sweep_interval_s,
                         hold_timeout_s=settings.hold_timeout_s)
    ...
    await sweeper.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from app.ledger.idempotency import IdempotencyStore
from app.ledger.service import Ledger

logger = logging.getLogger(__name__)


class Sweeper:
    def __init__(self, ledger: Ledger, *, idempotency: IdempotencyStore | None = None) -> None:
        self._ledger = ledger
        self._idempotency = idempotency
        self._task: asyncio.Task[None] | None = None

    async def sweep_once(self, *, hold_timeout_s: float) -> int:
        swept = await self._ledger.sweep(older_than_s=hold_timeout_s)
        if self._idempotency is not None:
            await self._idempotency.purge_expired()
        return swept

    async def run_forever(self, interval_s: float, hold_timeout_s: float) -> None:
        """Sweep every `interval_s` seconds until cancelled; errors are logged, not raised."""
        while True:
            try:
                swept = await self.sweep_once(hold_timeout_s=hold_timeout_s)
                if swept:
                    logger.warning("sweeper: refunded %d expired hold(s)", swept)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("sweeper: sweep failed; retrying in %.0f s", interval_s)
            await asyncio.sleep(interval_s)

    def start(self, *, interval_s: float, hold_timeout_s: float) -> asyncio.Task[None]:
        """Run `run_forever` in a task this object keeps (no fire-and-forget)."""
        if self._task is not None and not self._task.done():
            raise RuntimeError("sweeper already running")
        self._task = asyncio.create_task(
            self.run_forever(interval_s, hold_timeout_s), name="ledger-sweeper"
        )
        return self._task

    async def stop(self) -> None:
        """Cancel the task and wait for it to end (a sweep in flight is rolled back)."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
