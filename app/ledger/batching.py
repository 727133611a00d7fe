"""Group commit of holds on a hot account: one statement, one row lock, one WAL flush per batch.

(The same lane batches settles, `Ledger._finish`: one settle statement in flight per process,
the happy-path settles waiting behind it go in one `postgres_sql.SETTLE_BATCH`.)

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
from typing import Generic, TypeVar

from app.db.faults import DatabaseUnavailable
from app.ledger.repository import Finish, FinishedRequest, HoldRequest

logger = logging.getLogger(__name__)

#: the most items one statement carries (its arrays stay small; a larger backlog is several
#: statements back to back)
MAX_BATCH = 128

Item = TypeVar("Item")
Result = TypeVar("Result")


class Alone(enum.Enum):
    """Not done by the batch: do it alone (the single-item path decides, and explains)."""

    ALONE = "alone"


ALONE = Alone.ALONE


@dataclass(slots=True)
class _Lane(Generic[Item, Result]):
    waiting: list[tuple[Item, asyncio.Future[Result | Alone | None]]] = field(default_factory=list)


class Lanes(Generic[Item, Result]):
    """Per lane (an account for holds), one statement in flight in this process; the items
    that arrive meanwhile wait, and go together in one statement when it finishes.

    `one(item)`: the single statement (its result, or None: it refused). `many(items)`: the
    batch statement, the result of each item it did, by `ident(item)`; the rest are ALONE.
    """

    def __init__(
        self,
        one: Callable[[Item], Awaitable[Result | None]],
        many: Callable[[Sequence[Item]], Awaitable[dict[str, Result]]],
        *,
        lane: Callable[[Item], str],
        ident: Callable[[Item], str],
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._one = one
        self._many = many
        self._lane_of = lane
        self._ident = ident
        self._max_batch = max_batch
        #: lanes with a statement in flight here (and what waits behind it)
        self._lanes: dict[str, _Lane[Item, Result]] = {}
        self._drains: set[asyncio.Task[None]] = set()
        #: how many batch statements ran, and how many items they did (observability, tests)
        self.batches = 0
        self.batched = 0

    async def run(self, item: Item) -> Result | Alone | None:
        """The item's result; None: the single statement refused it; ALONE: a batch did not
        do it (the caller does it alone)."""
        name = self._lane_of(item)
        lane = self._lanes.get(name)
        if lane is None:  # cold: nothing in flight in this lane here, so go at once
            self._lanes[name] = lane = _Lane()
            try:
                return await self._one(item)
            finally:
                self._next(name, lane)
        future: asyncio.Future[Result | Alone | None] = asyncio.get_running_loop().create_future()
        lane.waiting.append((item, future))
        return await future

    def _next(self, name: str, lane: _Lane[Item, Result]) -> None:
        """The lane's statement finished: start draining what waits, or free the lane."""
        if not lane.waiting:
            del self._lanes[name]
            return
        task = asyncio.create_task(self._drain(name, lane), name="ledger-batch")
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)

    async def _drain(self, name: str, lane: _Lane[Item, Result]) -> None:
        try:
            while lane.waiting:
                taken = lane.waiting[: self._max_batch]
                del lane.waiting[: self._max_batch]
                batch = [(item, future) for item, future in taken if not future.done()]
                if batch:
                    await self._run(batch)
        finally:
            del self._lanes[name]
            for _, future in lane.waiting:  # only if the drain itself was cancelled
                if not future.done():
                    future.set_result(ALONE)

    async def _run(self, batch: list[tuple[Item, asyncio.Future[Result | Alone | None]]]) -> None:
        if len(batch) == 1:  # one waiter: exactly the single statement, its answer and errors
            item, future = batch[0]
            try:
                one = await self._one(item)
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
                return
            if not future.done():
                future.set_result(one)
            return
        try:
            done = await self._many([item for item, _ in batch])
        except DatabaseUnavailable as exc:  # each alone would only wait for the same outage
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except Exception:  # a duplicate request id, a deadlock ...: each alone says which
            logger.warning("ledger: a batch of %d failed; doing each alone", len(batch))
            done = {}
        except asyncio.CancelledError:
            for _, future in batch:
                if not future.done():
                    future.set_result(ALONE)
            raise
        self.batches += 1
        self.batched += len(done)
        for item, future in batch:
            if not future.done():
                future.set_result(done.get(self._ident(item), ALONE))

    async def wait_idle(self) -> None:
        """Wait for the batches still running (at shutdown)."""
        if self._drains:
            await asyncio.gather(*self._drains, return_exceptions=True)


def hold_lanes(
    one: Callable[[HoldRequest], Awaitable[int | None]],
    many: Callable[[Sequence[HoldRequest]], Awaitable[dict[str, int]]],
) -> Lanes[HoldRequest, int]:
    """Holds: one lane per account (the row they all lock)."""
    return Lanes(one, many, lane=lambda hold: hold.account_id, ident=lambda hold: hold.request_id)


def settle_lanes(
    one: Callable[[Finish], Awaitable[FinishedRequest | None]],
    many: Callable[[Sequence[Finish]], Awaitable[dict[str, FinishedRequest]]],
) -> Lanes[Finish, FinishedRequest]:
    """Settles: one lane per process (they lock only their own request_log rows; batching
    saves the statements and commits, not lock waits)."""
    return Lanes(one, many, lane=lambda _: "settles", ident=lambda settle: settle.request_id)
