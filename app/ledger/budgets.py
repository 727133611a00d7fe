"""Per-key budgets (SPEC 9): the windows a hold counts against, and their SQL.

A key may carry up to one budget per period (`key_budgets`): `day` and `month` are calendar
windows in the account's time zone (`accounts.timezone`, default UTC), `total` never resets.
What the key has spent in each window is a counter row in `key_spend`, keyed
`(key_id, window)` with `window` = `day:2026-12-02` / `month:2026-12` / `total`.

Exactness, the same way as the balance:
- The hold of a budgeted key adds its amount to every window's counter with ONE conditional
  upsert (`INSERT ... ON CONFLICT DO UPDATE ... WHERE spent + amount <= limit`): the row lock
  and the re-check of the WHERE on the latest row version make check-and-add one step, across
  any number of processes. If any window refuses, the whole unit of work (counters, balance,
  ledger row, request log) rolls back: a refused request moves nothing.
- The windows the hold counted against are stored on the request's `request_log` row
  (`budget_windows`); the refund of a settle or a sweep gives `held - cost` back to exactly
  those counters in the same unit of work as the balance refund. A request that straddles
  midnight gives back to the day it was charged to.
- Lock order: a budgeted hold locks its `key_spend` rows, then the `accounts` row; the
  refund statement is written so that it also updates `key_spend` before `accounts` (see
  `postgres_sql.FINISH`), and a deadlock the database reports anyway is retried.

The calendar comes from `clock` (the process's UTC time, injectable for tests), not from the
database: processes whose clocks differ by a second may count a request at 23:59:59.9 to
either day; every request still counts against exactly one day, exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import delete, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db.models import Account, ApiKey, KeyBudget, KeySpend
from app.errors import BudgetExceeded, InvalidParameter
from app.money import micros_to_decimal

Period = Literal["day", "month", "total"]
PERIODS: tuple[Period, ...] = ("day", "month", "total")
Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class Budget:
    period: Period
    amount_micros: int


@dataclass(frozen=True, slots=True)
class BudgetUsage:
    """One budget with what its current window has spent."""

    period: Period
    amount_micros: int
    window: str
    spent_micros: int

    @property
    def remaining_micros(self) -> int:
        return max(self.amount_micros - self.spent_micros, 0)


def file_clock(path: Path | None) -> Clock:
    """The system UTC clock, or (tests) the instant in `path` (`GATEWAY_TEST_CLOCK_FILE`)."""
    if path is None:
        return lambda: datetime.now(UTC)

    def read() -> datetime:
        instant = datetime.fromisoformat(path.read_text().strip())
        return instant if instant.tzinfo else instant.replace(tzinfo=UTC)

    return read


def check_timezone(name: str) -> str:
    """An IANA zone name the gateway can compute calendars in, or 400 naming `timezone`."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidParameter(
            f"timezone {name!r} is not an IANA time zone (e.g. 'UTC', 'Europe/Berlin').",
            param="timezone",
        ) from exc
    return name


def window_of(period: Period, now_utc: datetime, timezone: str) -> str:
    """The window key of `period` at instant `now_utc`, on the account's calendar."""
    if period == "total":
        return "total"
    local = now_utc.astimezone(ZoneInfo(timezone))
    return f"day:{local:%Y-%m-%d}" if period == "day" else f"month:{local:%Y-%m}"


def check_budgets(raw: Iterable[Budget]) -> list[Budget]:
    budgets = list(raw)
    periods = [budget.period for budget in budgets]
    if len(set(periods)) != len(periods):
        raise InvalidParameter("budgets may name each period at most once.", param="budgets")
    for budget in budgets:
        if budget.period not in PERIODS:
            raise InvalidParameter("budget period must be day, month or total.", param="budgets")
        if budget.amount_micros <= 0:
            raise InvalidParameter("a budget amount must be positive.", param="budgets")
    return sorted(budgets, key=lambda budget: PERIODS.index(budget.period))


class BudgetRefused(BudgetExceeded):
    """A budget refused a hold: the client's 402, plus which window did it (for the
    `budget.reached` webhook event)."""

    def __init__(self, message: str, *, period: Period, window: str, amount_micros: int) -> None:
        super().__init__(message)
        self.period = period
        self.window = window
        self.amount_micros = amount_micros


def budget_exceeded(period: Period, amount_micros: int, window: str = "") -> BudgetRefused:
    label = {"day": "daily", "month": "monthly", "total": "total"}[period]
    amount = f"{micros_to_decimal(amount_micros):f}"
    return BudgetRefused(
        f"This request would take the API key over its {label} budget of ${amount}.",
        period=period,
        window=window,
        amount_micros=amount_micros,
    )


class BudgetRepository:
    """The budget SQL; like every repository it runs on the caller's connection, never commits."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection
        self._insert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert

    async def budgets_and_timezone(
        self, *, key_id: str, account_id: str
    ) -> tuple[list[Budget], str]:
        rows = (
            await self._conn.execute(
                select(Account.timezone, KeyBudget.period, KeyBudget.amount_micros)
                .select_from(Account)
                .outerjoin(KeyBudget, KeyBudget.key_id == key_id)
                .where(Account.id == account_id)
            )
        ).all()
        timezone = rows[0].timezone if rows else "UTC"
        budgets = [Budget(row.period, int(row.amount_micros)) for row in rows if row.period]
        return check_budgets(budgets), timezone

    async def add_if_within(
        self, *, key_id: str, amount_micros: int, windows: list[tuple[str, int]]
    ) -> dict[str, int]:
        """Add `amount_micros` to every (window, limit) that stays within its limit.

        Returns the windows that took it, each with its spend after; the caller rolls back
        unless that is all of them.
        """
        rows = [
            {
                "key_id": key_id,
                "window": window,
                "limit_micros": limit,
                "spent_micros": amount_micros,
            }
            for window, limit in windows
            if amount_micros <= limit
        ]
        if not rows:
            return {}
        statement = self._insert(KeySpend).values(rows)
        excluded = statement.excluded
        upsert = statement.on_conflict_do_update(
            index_elements=[KeySpend.key_id, KeySpend.window],
            set_={
                "spent_micros": KeySpend.spent_micros + excluded.spent_micros,
                "limit_micros": excluded.limit_micros,
            },
            where=KeySpend.spent_micros + excluded.spent_micros <= excluded.limit_micros,
        ).returning(KeySpend.window, KeySpend.spent_micros)
        return {row.window: int(row.spent_micros) for row in await self._conn.execute(upsert)}

    async def usage(self, *, key_id: str, clock: Clock) -> list[BudgetUsage]:
        """Each budget of the key with the spend of its current window."""
        owner = (
            await self._conn.execute(select(ApiKey.account_id).where(ApiKey.id == key_id))
        ).scalar_one_or_none()
        if owner is None:
            return []
        budgets, timezone = await self.budgets_and_timezone(key_id=key_id, account_id=owner)
        now = clock()
        windows = {budget.period: window_of(budget.period, now, timezone) for budget in budgets}
        spent = {
            row.window: int(row.spent_micros)
            for row in await self._conn.execute(
                select(KeySpend.window, KeySpend.spent_micros).where(
                    KeySpend.key_id == key_id, KeySpend.window.in_(list(windows.values()))
                )
            )
        }
        return [
            BudgetUsage(
                period=budget.period,
                amount_micros=budget.amount_micros,
                window=windows[budget.period],
                spent_micros=spent.get(windows[budget.period], 0),
            )
            for budget in budgets
        ]

    async def replace(self, *, key_id: str, budgets: list[Budget]) -> None:
        """Set the key's budgets (an empty list removes them); spend counters are kept."""
        await self._conn.execute(delete(KeyBudget).where(KeyBudget.key_id == key_id))
        if budgets:
            await self._conn.execute(
                insert(KeyBudget),
                [
                    {"key_id": key_id, "period": b.period, "amount_micros": b.amount_micros}
                    for b in budgets
                ],
            )
