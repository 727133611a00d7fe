"""Group commit of holds on a hot account: one statement, one row lock, one WAL flush per batch.

A hold is one conditional UPDATE of the account's row; Postgres holds that row lock until the
statement commits (its WAL flush included), so holds on ONE account run one after another, each
paying a commit: about 280 per second, whatever the number of processes. `HoldLanes` keeps, per
account and per process, at most one hold statement in flight:

- a cold account (nothing in flight for it here) runs its hold at once, alone, with exactly the
  single-hold statement (`postgres_sql.HOLD`): same SQL, same latency, no task, no queue;
- holds that arrive while one is in flight wait in the account's lane; when it finishes, a
  drain task takes everything waiting (up to `MAX_BATCH`) and holds it in ONE statement
  (`postgres_sql.HOLD_BATCH`), then the next batch, until the lane is empty.

So batching switches itself on exactly when an account has holds waiting on each other, and
the batch grows with the load: the row is locked once per batch, not once per request.

Exactness is the database's, not this module's: a batch is one atomic statement that debits all
its usable items or none (`HOLD_BATCH`), and everything it did not hold goes back to its caller
as `ALONE`, to be held (or refused, with the exact reason) by the single-hold path, which also
decides the last requests a nearly empty balance covers. A waiter cancelled before its batch
starts is dropped (nothing written); one cancelled while its batch runs is like a cancelled
single hold: if the statement committed, the request is `pending` and its exit refunds it (or
the sweeper, after the hold timeout). A process killed mid-batch leaves either nothing or
`pending` rows that the sweeper refunds.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from app.db.faults import DatabaseUnavailable
from app.ledger.repository import HoldRequest

logger = logging.getLogger(__name__)

#: the most holds one statement carries (its arrays stay small; a larger backlog is several
#: statements back to back)
MAX_BATCH = 128


class Alone(enum.Enum):
    """Not held by the batch: hold it alone (the single-hold path decides, and explains)."""

    ALONE = "alone"


ALONE = Alone.ALONE

#: the single hold: the balance after, or None when the statement refused it
HoldOne = Callable[[HoldRequest], Awaitable[int | None]]
#: the batch: the balance after each item it held, by request id (the rest: not held)
HoldMany = Callable[[Sequence[HoldRequest]], Awaitable[dict[str, int]]]
Waiter = tuple[HoldRequest, "asyncio.Future[int | None | Alone]"]


@dataclass(slots=True)
class _Lane:
    waiting: list[Waiter] = field(default_factory=list)


class HoldLanes:
    """Per account, one hold statement in flight in this process; the rest wait and batch."""

    def __init__(self, hold_one: HoldOne, hold_many: HoldMany, *, max_batch: int = MAX_BATCH):
        self._hold_one = hold_one
        self._hold_many = hold_many
        self._max_batch = max_batch
        #: accounts with a hold statement in flight here (and what waits behind it)
        self._lanes: dict[str, _Lane] = {}
        self._drains: set[asyncio.Task[None]] = set()
        #: how many batch statements ran, and how many holds they carried (observability, tests)
        self.batches = 0
        self.batched_holds = 0

    async def hold(self, hold: HoldRequest) -> int | None | Alone:
        """The balance after the hold; None: the single statement refused it; ALONE: a batch
        did not hold it (the caller holds it alone)."""
        lane = self._lanes.get(hold.account_id)
        if lane is None:  # cold: nothing in flight for this account here, so go at once
            self._lanes[hold.account_id] = lane = _Lane()
            try:
                return await self._hold_one(hold)
            finally:
                self._next(hold.account_id, lane)
        future: asyncio.Future[int | None | Alone] = asyncio.get_running_loop().create_future()
        lane.waiting.append((hold, future))
        return await future

    def _next(self, account_id: str, lane: _Lane) -> None:
        """The lane's statement finished: start draining what waits, or free the lane."""
        if not lane.waiting:
            del self._lanes[account_id]
            return
        task = asyncio.create_task(self._drain(account_id, lane), name="ledger-hold-batch")
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)

    async def _drain(self, account_id: str, lane: _Lane) -> None:
        try:
            while lane.waiting:
                taken = lane.waiting[: self._max_batch]
                del lane.waiting[: self._max_batch]
                batch = [(hold, future) for hold, future in taken if not future.done()]
                if batch:
                    await self._run(batch)
        finally:
            del self._lanes[account_id]
            for _, future in lane.waiting:  # only if the drain itself was cancelled
                if not future.done():
                    future.set_result(ALONE)

    async def _run(self, batch: list[Waiter]) -> None:
        if len(batch) == 1:  # one waiter: exactly the single hold, its answer and its errors
            hold, future = batch[0]
            try:
                one = await self._hold_one(hold)
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
                return
            if not future.done():
                future.set_result(one)
            return
        holds = [hold for hold, _ in batch]
        try:
            held = await self._hold_many(holds)
        except DatabaseUnavailable as exc:  # each alone would only wait for the same outage
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except Exception:  # a duplicate request id, a deadlock ...: each alone says which
            logger.warning("ledger: a batch of %d holds failed; holding each alone", len(batch))
            held = {}
        except asyncio.CancelledError:
            for _, future in batch:
                if not future.done():
                    future.set_result(ALONE)
            raise
        self.batches += 1
        self.batched_holds += len(held)
        for hold, future in batch:
            if not future.done():
                future.set_result(held.get(hold.request_id, ALONE))

    async def wait_idle(self) -> None:
        """Wait for the batches still running (at shutdown)."""
        if self._drains:
            await asyncio.gather(*self._drains, return_exceptions=True)
