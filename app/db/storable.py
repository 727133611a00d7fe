"""What the database columns can hold, checked before any SQL runs.

Postgres refuses a NUL character in any text value and an integer beyond its column's type;
SQLite stores the first and refuses integers beyond 64 bits before sending anything. Either
way the refusal would come from the driver, after the request was accepted, as an error that
names no field. Every value a client sends toward a column is checked here first, so bad
input is a 400 naming its field on both backends (see `app.db.faults` for the other side:
what a database that does not answer looks like).
"""

from __future__ import annotations

from datetime import UTC, datetime

from app.errors import InvalidParameter

#: Postgres INTEGER (rpm, concurrency, statuses) and BIGINT (ids, micro-dollars)
INT_MAX = 2**31 - 1
BIGINT_MAX = 2**63 - 1


def has_nul(value: str) -> bool:
    return "\x00" in value


def storable_text(value: str, param: str) -> str:
    """`value`, or a 400 naming `param` when no text column could hold it."""
    if has_nul(value):
        raise InvalidParameter(f"{param} must not contain a NUL character.", param=param)
    return value


def storable_int(value: int, param: str, *, maximum: int = INT_MAX) -> int:
    """`value`, or a 400 naming `param` when it is beyond `maximum` (an INTEGER by default)."""
    if abs(value) > maximum:
        raise InvalidParameter(f"{param} must be at most {maximum}.", param=param)
    return value


def utc_instant(value: datetime, param: str) -> datetime:
    """`value` in UTC (a naive one is taken as UTC), or a 400 naming `param` when it has no
    UTC equivalent a datetime can hold (9999-12-31T23:00-05:00 is past the year 9999)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidParameter(f"{param} is out of range.", param=param) from None
